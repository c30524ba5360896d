"""`judgefleet bench`'s parts: the peers' concurrent client, the peers as methods, llama-server's build, the article's table."""
