"""A Consul agent that restarted without its state answers "nothing" for a moment: the known state is kept."""

from protomesh._access import _AfterRestart


def test_an_empty_answer_after_the_index_went_back_keeps_the_known_state_until_something_arrives() -> None:
    seen = _AfterRestart("intentions")
    assert not seen.keeps(40, empty=False, holding=False)   # first answer: applied
    assert seen.keeps(1, empty=True, holding=True)          # the agent restarted empty: kept
    assert seen.keeps(1, empty=True, holding=True)          # its blocking query timed out: still kept
    assert not seen.keeps(7, empty=False, holding=True)     # the runner wrote them again: applied


def test_an_empty_answer_with_a_forward_index_is_a_real_removal() -> None:
    seen = _AfterRestart("intentions")
    assert not seen.keeps(40, empty=False, holding=False)
    assert not seen.keeps(41, empty=True, holding=True)


def test_after_a_restart_a_removal_made_later_applies() -> None:
    seen = _AfterRestart("intentions")
    seen.keeps(40, empty=False, holding=False)
    assert seen.keeps(1, empty=True, holding=True)
    assert not seen.keeps(5, empty=True, holding=True)


def test_nothing_is_kept_when_nothing_was_known() -> None:
    seen = _AfterRestart("intentions")
    seen.keeps(40, empty=True, holding=False)
    assert not seen.keeps(1, empty=True, holding=False)
