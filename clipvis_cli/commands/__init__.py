"""One module per `clipvis` subcommand."""
