from cwhost.cli import main

raise SystemExit(main())
