"""vLLM's error answers in the pool's contract (issue 11): a 4xx keeps its message, anything else
is a 500 with an error id and no internals. Pure: vLLM itself is not needed."""

import logging

from serve.engines.vllm import error_reply


def test_a_vllm_4xx_keeps_its_status_and_message():
    reply = error_reply({"message": "max_tokens is too large", "type": "BadRequestError", "param": "max_tokens",
                         "code": 400})
    assert reply["status"] == 400 and reply["body"]["error"]["message"] == "max_tokens is too large"
    assert reply["body"]["error"]["param"] == "max_tokens"
    assert error_reply({"message": "x", "code": "404"})["status"] == 404


def test_a_vllm_error_without_a_usable_code_is_a_500_with_an_id_not_a_crash(caplog):
    with caplog.at_level(logging.ERROR):
        for error in ({"message": "CUDA error at /opt/vllm/kernels.cu", "code": "InternalServerError"},
                      {"message": "boom"}, {"message": "boom", "code": 500}, {"code": True}):
            reply = error_reply(error)
            assert reply["status"] == 500 and reply["body"]["error"]["code"] == "internal_error"
            assert "CUDA" not in reply["body"]["error"]["message"]
    assert "CUDA error" in caplog.text  # the log keeps it, under the id
