from qwq_edge.reasoning.markers import MarkerScanner


def feed_all(scanner: MarkerScanner, pieces: list[str]) -> tuple[str, str | None]:
    before, after = "", None
    for piece in pieces:
        if after is not None:
            after += piece
            continue
        emitted, after = scanner.feed(piece)
        before += emitted
    return before, after


def test_marker_split_over_pieces_is_found_and_held_back():
    scanner = MarkerScanner("</think>")
    assert scanner.feed("so the answer is 4.</") == ("so the answer is 4.", None)
    assert scanner.feed("thi") == ("", None)
    assert scanner.feed("nk>\n\nFour") == ("", "\n\nFour")
    assert scanner.found


def test_text_that_only_looks_like_a_marker_start_is_released():
    scanner = MarkerScanner("</think>")
    assert scanner.feed("a </t") == ("a ", None)
    assert scanner.feed("able>") == ("</table>", None)
    assert not scanner.found


def test_flush_releases_held_text():
    scanner = MarkerScanner("**Final Answer**")
    assert scanner.feed("x **Final") == ("x ", None)
    assert scanner.flush() == "**Final"


def test_every_split_of_the_text_gives_the_same_result():
    text = "reasoning... **Final Answer**\n\n42"
    for cut in range(1, len(text)):
        before, after = feed_all(MarkerScanner("**Final Answer**"), [text[:cut], text[cut:]])
        assert (before, after) == ("reasoning... ", "\n\n42")
