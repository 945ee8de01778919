from consumers.cli import main

raise SystemExit(main())
