from devise_utils.cli import main

raise SystemExit(main())
