"""The interfaces: the `ragft` command line and the HTTP API. They wire the engine (the rest of `service/`) to the
evaluation (`eval/`); nothing in the engine imports them or `eval/`."""
