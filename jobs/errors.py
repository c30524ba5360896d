"""Errors a user can fix. The CLI prints their message, without a traceback, and exits non-zero.

    JudgefleetError
     +-- ConfigError     a key, a value or a config file is wrong
     +-- DatasetError    the dataset cannot be read or lacks what the config asks for
     +-- OutputError     the output directory cannot be written
    serve.endpoint.EndpointError   the judge endpoint cannot be reached, does not serve the
                                   model, or cannot be deployed (raised by its owner in serve/)

Each message names the bad value and what to do about it.
"""

from serve.endpoint import EndpointError

__all__ = ["JudgefleetError", "ConfigError", "DatasetError", "OutputError", "EndpointError", "USER_ERRORS"]


class JudgefleetError(Exception):
    """Base for user-fixable errors."""


class ConfigError(JudgefleetError):
    pass


class DatasetError(JudgefleetError):
    pass


class OutputError(JudgefleetError):
    pass


# What the CLI reports as one line and exit status 2, without a traceback.
USER_ERRORS = (JudgefleetError, EndpointError)
