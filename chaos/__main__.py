"""`python -m chaos`: the same as the `chaos` command."""

from chaos.cli.main import main

main()
