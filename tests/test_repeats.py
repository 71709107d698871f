"""Item-, sentence- and word-level repetition signals (dpominer/repeats.py), with hand-made texts."""

from __future__ import annotations

from conftest import PASSAGE

from dpominer.degeneration import detect
from dpominer.repeats import inline_list, list_stats, logprob_profile, sentence_stats, word_run

FRUITS = "Here are 20 fruits:\n1. Apple\n2. Banana\n3. Cherry\n" + "".join(
    f"{i}. Blackberry\n" for i in range(4, 21))


def test_a_stuck_list_item_under_a_climbing_number():
    stats = list_stats(FRUITS)
    assert stats is not None and stats.items == 21
    run = stats.run
    assert (run.copies, run.item, run.counter) == (17, "blackberry", True)
    assert FRUITS[run.start : run.end] == "".join(f"{i}. Blackberry\n" for i in range(4, 21)).rstrip("\n")
    assert stats.dup_share == 16 / 21  # 21 worded lines (the heading too), 16 repeat an earlier one


def test_a_stuck_item_that_stopped_by_itself_is_degenerate_and_says_where():
    result = detect(FRUITS, finish_reason="stop")
    assert (result.verdict, result.kind) == ("degenerate", "stuck_item")
    assert result.start_char == FRUITS.index("4. Blackberry") and result.copies == 17
    assert result.unit == "4. Blackberry" and "'blackberry' × 17 lines" in result.why


def test_a_weekday_cycle_counts_as_a_marker():
    chores = "".join(f"{day}: Go to the gym.\n" for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"))
    run = list_stats(chores).run
    assert (run.copies, run.counter) == (5, True)
    assert detect(chores, finish_reason="stop").verdict == "degenerate"
    # Portuguese names too, and a one-line item per day that differs is a plain list.
    dias = "Segunda-feira: estudar\nTerça-feira: estudar\nQuarta-feira: estudar\nQuinta-feira: estudar\n"
    assert list_stats(dias).run.copies == 4
    week = "Monday: gym\nTuesday: swim\nWednesday: rest\nThursday: run\nFriday: yoga\n"
    assert list_stats(week).run is None and detect(week, finish_reason="stop").verdict == "clean"


def test_legitimate_lists_and_tables_are_not_stuck_items():
    plan = "".join(f"Semana {i}: correr {i + 1} km\n" for i in range(1, 9))  # two numbers move: a plan
    table = "".join(f"7 x {i} = {7 * i}\n" for i in range(1, 13))
    counting = "\n".join(str(i) for i in range(1, 21))
    hours = "| Day | Opens |\n|---|---|\n" + "".join(f"| {d} | 9:00 |\n" for d in ("Monday", "Tuesday", "Wednesday"))
    form = "Name: ______\nAddress: ______\nCity: ______\nPhone: ______\nEmail: ______\n"
    for text in (plan, table, counting, hours, form):
        stats = list_stats(text)
        assert stats.run is None or stats.run.copies < 4, text
        assert detect(text, finish_reason="stop").verdict == "clean", text


def test_sentences_re_said_with_one_word_swapped():
    text = ("Python is a language. It is not a pure language. It is not a high-level language. "
            "It is not a pure language. It is not a compiled language. It is not a pure language.")
    stats = sentence_stats(text)
    assert (stats.sentences, stats.repeats) == (6, 4)
    assert stats.start == text.index("It is not a pure")
    result = detect(text, finish_reason="stop")
    assert (result.verdict, result.kind) == ("degenerate", "sentence_repeat")


def test_sentences_that_share_a_pattern_but_say_different_things():
    checklist = ("Check the oil level now. Check the tyre pressure now. Check the brake fluid now. "
                 "Check the coolant level now. Check the lights and wipers now.")
    assert sentence_stats(checklist).repeats == 1  # "oil level" / "coolant level": one swap, once
    assert detect(checklist, finish_reason="stop").verdict == "clean"
    assert sentence_stats(PASSAGE).repeats == 0


def test_sentences_re_said_with_words_inserted_or_dropped():
    steps = ("1. A bill is written by a member. 2. If the bill passes, it is sent to the legislative body for a "
             "vote. 3. The bill is then debated. 4. If the bill is passed, it is sent to the legislative body for a "
             "vote. 5. If the bill is passed again, it is sent to the legislative body for a vote.")
    stats = sentence_stats(steps)
    assert stats.repeats == 0  # not the same length: no one-word swap
    assert stats.near == 2  # steps 4 and 5 are close to step 2 (an insertion, a changed word)
    checklist = ("Check the oil level now. Check the tyre pressure now. Check the brake fluid now. "
                 "Check the coolant level now. Check the lights and wipers now.")
    assert sentence_stats(checklist).near <= 1  # a shared pattern, different things said
    assert sentence_stats(PASSAGE).near == 0


def test_a_short_word_said_over_and_over_inside_a_list():
    words = "fruits: apple, banana, th, th, th, th, th, th, th, th, th, cherry".split()
    assert word_run(words) == (9, "th,")
    assert word_run("8-bit, 0-bit, 0-bit, 0-bit, 0-bit, 0-bit".split())[0] <= 1  # digits folded: not a run
    text = "My favourite fruits are apple, banana, " + "th, " * 12 + "and cherry."
    result = detect(text, finish_reason="stop")
    assert (result.verdict, result.kind) == ("degenerate", "word_run")
    assert result.start_char == text.index("th,") and result.copies == 12


def test_logprob_profile_by_hand():
    assert logprob_profile([-1.0] * 10) is None  # too short to tell
    lps = [-2.0] * 8 + [-1.0] * 16 + [-0.1] * 8  # 32 tokens: quarters of 8
    tail, head = logprob_profile(lps)
    assert (round(tail, 6), round(head, 6)) == (-0.1, -2.0)


def test_stuck_items_and_repeated_lines_the_reference_has_are_legit():
    reference = "Inspection log\n" + "".join(f"{i}. Door checked, no damage\n" for i in range(1, 9))
    assert detect(reference, finish_reason="stop").verdict == "degenerate"  # without the reference: a loop
    legit = detect(reference, finish_reason="stop", reference=reference)
    assert (legit.verdict, legit.kind) == ("clean", "legit_repetition")
    places = ("Beach", "Pool", "Park", "Lake", "Sea", "Hill")  # 24 lines, 15 of them re-said
    blocks = "".join(f"* {h}:\n  + towel\n  + umbrella\n  + chairs\n" for h in places)
    looped = detect(blocks, finish_reason="stop")
    assert (looped.verdict, looped.kind) == ("degenerate", "repeated_items")
    assert looped.start_char == blocks.index("  + towel") and "towel" in looped.why
    assert detect(blocks, finish_reason="stop", reference=blocks).verdict == "clean"


def test_a_word_said_five_times_is_a_loop_even_in_a_short_text():
    text = "O bolo de cenoura é a receita da minha avó, da da da da da avó dela."
    assert len(text) < 200  # shorter than the tail signals need: the word run must not depend on them
    result = detect(text, finish_reason="stop")
    assert (result.verdict, result.kind, result.copies) == ("degenerate", "word_run", 5.0)
    assert result.start_char == text.index("da da")
    # three times is a stutter, and runs of punctuation (empty table cells) need more copies
    assert detect("It was very very very cold that winter in the north.", finish_reason="stop").verdict == "clean"
    assert detect("| a | b |\n| - | - | - | - | - |\n| c | d |", finish_reason="stop").verdict == "clean"


def test_the_same_line_three_times_in_a_row_is_a_loop_but_three_days_of_rest_are_a_plan():
    text = "Ciao, come stai?\nBene, grazie.\n\nIn italiano.\n\nIn italiano.\n\nIn italiano.\n"
    result = detect(text, finish_reason="stop")
    assert (result.verdict, result.kind, result.copies) == ("degenerate", "stuck_item", 3.0)
    assert result.start_char == text.index("In italiano.")
    plan = "Monday: run 5 km\nTuesday: rest\nWednesday: rest\nThursday: rest\nFriday: swim\n"
    assert list_stats(plan).run.copies == 3 and list_stats(plan).run.counter
    assert detect(plan, finish_reason="stop").verdict != "degenerate"  # a moving weekday needs 4 copies


def test_lines_that_come_round_again_with_other_numbers():
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun")
    text = "".join(f"{m}: {28 + i % 4}\n" for i, m in enumerate(months + months + months))
    stats = list_stats(text)
    assert stats.dup_share == 0.0 or stats.dup_share < stats.dup_folded
    assert stats.dup_folded == 12 / 18  # the second and third rounds re-say the first up to their numbers
    once = "".join(f"{m}: {30 + i}\n" for i, m in enumerate(months))
    assert list_stats(once).dup_folded == 0.0


def test_an_inline_list_that_keeps_coming_round():
    names = ["Earth", "Mars", "Venus", "Mercury"]
    text = "The planets of the solar system are: " + ", ".join(names * 4) + "."
    stats = inline_list(text)
    # the lead-in is too long to be an item: 15 items, the first 4 new, the other 11 said before
    assert (stats.items, stats.dup_share, stats.item) == (15, 11 / 15, "mars")
    assert stats.start == text.index("Mars", text.index("Mercury"))
    result = detect(text, finish_reason="stop")
    assert (result.verdict, result.kind, result.start_char) == ("degenerate", "repeated_inline_items", stats.start)
    # an enumeration of different things, and prose with commas, are not
    fruits = "I bought apples, pears, plums, grapes, figs, dates, kiwis, limes, lemons and a melon."
    assert inline_list(fruits).dup_share == 0.0 and detect(fruits, finish_reason="stop").verdict == "clean"
    assert inline_list("It was cold, and we went home, then we slept, as one does, in the end.") is None
    # the same list in the reference is the content
    assert detect(text, finish_reason="stop", reference=text).verdict == "clean"
