"""The poster's numbers (AwA2, standard split, 40 seen / 10 unseen), shown beside this run's.

A module of constants only (no imports), so the report can be written without loading
torch or fastai.
"""

#: Per backbone: parameters (millions), size (MB), Stage I accuracy, Stage II top-k;
#: and the zero-shot per-class mean top-1 on the 10 unseen classes.
POSTER = {
    "squeezenet1_1": {"params_m": 1.4, "mb": 6.0, "stage1_accuracy": 0.8905,
                      "top1": 0.8060, "top3": 0.8909, "top5": 0.9124, "top10": 0.9430},
    "resnet34": {"params_m": 21.8, "mb": 87.0, "stage1_accuracy": 0.9465,
                 "top1": 0.7452, "top3": 0.8687, "top5": 0.8982, "top10": 0.9317},
    "zero_shot_per_class_top1": 0.6736,
}
