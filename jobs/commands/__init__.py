"""One module per `judgefleet` verb (score, serve, bench), each with a `run(config)`."""
