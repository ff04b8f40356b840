from cwhost.cli.commands import main

raise SystemExit(main())
