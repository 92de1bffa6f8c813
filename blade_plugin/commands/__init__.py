"""One module per `blade-bpo` sub-command; each exposes a click command."""
