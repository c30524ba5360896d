"""Errors a user can fix. The CLI prints their message, without a traceback, and exits non-zero.

    JudgefleetError
     +-- ConfigError     a key, a value or a config file is wrong
     +-- DatasetError    the dataset cannot be read or lacks what the config asks for
     +-- EndpointError   the judge endpoint cannot be reached or does not serve the model
     +-- OutputError     the output directory cannot be written

Each message names the bad value and what to do about it.
"""


class JudgefleetError(Exception):
    """Base for user-fixable errors."""


class ConfigError(JudgefleetError):
    pass


class DatasetError(JudgefleetError):
    pass


class EndpointError(JudgefleetError):
    pass


class OutputError(JudgefleetError):
    pass
