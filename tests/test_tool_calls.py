"""Reading ``<tool_call>`` blocks back, whole or streamed in pieces (pure text, no model)."""

import json

from qwq_edge.events import AnswerDelta
from qwq_edge.server.mapping import Reply, chat_chunk
from qwq_edge.text.tool_calls import ToolCall, ToolCallScanner, split_tool_calls

CALL = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'


def test_split_takes_well_formed_blocks_and_leaves_the_rest():
    text, calls = split_tool_calls(f"Sure.{CALL}{CALL}<tool_call>not json</tool_call>")
    assert text == "Sure.<tool_call>not json</tool_call>"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"x": 1})] * 2


def test_the_scanner_holds_back_a_block_until_it_closes_whatever_the_pieces():
    for size in (1, 3, 7, len(CALL)):
        scanner, out = ToolCallScanner(), []
        whole = f"Hi <b> {CALL} bye <tool"
        for start in range(0, len(whole), size):
            out += scanner.feed(whole[start : start + size])
        texts = "".join(item for item in out if isinstance(item, str))
        calls = [item for item in out if isinstance(item, ToolCall)]
        assert texts == "Hi <b>  bye " and len(calls) == 1 and calls[0].name == "f"
        assert scanner.flush() == "<tool"


def test_streamed_chunks_carry_calls_with_their_index():
    reply = Reply("m", "chat", tool_calls=ToolCallScanner())
    deltas = [chat_chunk(AnswerDelta(piece), reply) for piece in (CALL[:9], CALL[9:], CALL)]
    assert deltas[0] is None
    calls = [d["choices"][0]["delta"]["tool_calls"][0] for d in deltas[1:]]
    assert [c["index"] for c in calls] == [0, 1] and calls[0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
