"""``python -m devise_utils train --stage 1|2``: train one stage of a configuration, in one
process or in several started by ``accelerate launch`` or ``torchrun`` (docs/distributed.md).

It writes what :class:`~devise_utils.study.run.Run` and the notebooks load: the stage's
checkpoint under the configuration's key, so a pipeline run with the same parameters finds
the stage trained and goes on from there. The parameters are the pipeline's (``--dataset``,
``--set KEY=VALUE``, ...), checked the same way before anything is read.

Under a launcher, rank 0 prepares the data (and runs the LR range test, when a learning rate
is left to it) while the other ranks wait; they then read what it wrote and check they see
the same data. Every rank trains on its shard of each epoch; rank 0 writes the checkpoint.
"""

from __future__ import annotations

from devise_utils.core.config import Config, ConfigError, make_config
from devise_utils.core.errors import NotTrainedError
from devise_utils.model import distributed
from devise_utils.model.train import StageResult, finished_stage, train_stage1, train_stage2
from devise_utils.pipeline import check, params_from_args
from devise_utils.study.run import Run

SAME_DATA_FIX = ("every machine needs the same dataset and word vectors at the same paths "
                 "(a shared data_dir, or the same files copied to each)")


def train(cfg: Config, stage: int, *, force: bool = False) -> StageResult:
    """Train ``stage`` of ``cfg`` (loaded instead when finished, unless ``force``) on this
    process and the others the launcher started, if any."""
    run = Run(cfg, log=_log)
    with distributed.main_first():
        exp = run.data  # rank 0 generates the dataset and caches the images; the rest read
        _check_shard(cfg, exp.counts["train"])
        s1 = _stage1(run) if stage == 2 else None
        lr = cfg.stage1_lr if stage == 1 else cfg.stage2_lr
        if lr is None and (force or finished_stage(exp, stage) is None):
            with distributed.alone():  # cached as JSON: the other ranks read rank 0's result
                run.lr_find(stage)
    distributed.check_same(exp.fingerprint, "data fingerprint", SAME_DATA_FIX)
    hit = None if force else finished_stage(exp, stage)
    distributed.check_same(hit is not None, "view of the finished stages",
                           "give every machine the same runs_dir (a shared folder)")
    if hit:
        _log(f"Stage {'I' * stage} is already trained: {hit.path}")
        return hit
    _log(f"Stage {'I' * stage}: training on {distributed.world_size()} process(es) "
         f"-> {cfg.stage_dir(stage)}")
    return train_stage1(exp, force=True) if stage == 1 else train_stage2(exp, s1, force=True)


def _check_shard(cfg: Config, n_train: int) -> None:
    """Each process takes ``batch_size`` images a step and drops a last partial batch, so a
    shard smaller than a batch would train nothing."""
    n = distributed.world_size()
    if -(-n_train // n) < cfg.batch_size:
        raise ConfigError(f"parameter 'batch_size': each of {n} process(es) gets "
                          f"{-(-n_train // n)} training images an epoch, fewer than batch_size "
                          f"{cfg.batch_size}, so no step would train; lower batch_size (it is "
                          "per process) or use more images (max_per_class)")


def _stage1(run: Run) -> StageResult:
    try:
        return run.stage1
    except NotTrainedError:
        raise NotTrainedError(
            f"Stage II starts from Stage I, which is not trained for this configuration "
            f"({run.cfg.stage_dir(1)}); train it first with the same parameters: "
            "python -m devise_utils train --stage 1 ...") from None


def _log(*args, **kwargs) -> None:
    if distributed.is_main():
        print(*args, **{"flush": True, **kwargs})


def command(args) -> int:
    """``python -m devise_utils train``: parameters as the pipeline reads them."""
    cfg = make_config(params_from_args(args))
    check(cfg)
    distributed.start(cfg.resolved_device())
    try:
        result = train(cfg, args.stage, force=args.force)
    finally:
        distributed.stop()
    m = result.metrics
    _log(f"Stage {'I' * args.stage}: {result.path}  valid accuracy {m['valid_accuracy']:.4f}  "
         f"({m['train_seconds']:.0f} s, {result.meta.get('processes', 1)} process(es))")
    return 0
