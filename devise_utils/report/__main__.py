from devise_utils.report.build import main

raise SystemExit(main())
