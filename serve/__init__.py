"""judgefleet's route: a generic OpenAI-compatible Ray Serve application over judge replicas.

Its public face, for `jobs/` and any other caller: `serve.config` (the settings), `serve.endpoint`
(`JudgeEndpoint`, the one owner of a deployed or external endpoint) and `serve.wire` (what the
route adds to the OpenAI API). `serve.app:app_builder` is the `import_path` for Serve YAMLs. The
other modules are the route's own. Nothing is imported here, so `import serve.config` stays light.
"""
