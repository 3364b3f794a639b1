import pytest

from forgetscope.data.encoding import IGNORE_INDEX, collate, encode_example, encode_examples
from forgetscope.data.types import Example
from forgetscope.errors import DataError


def test_plain_text_scores_every_token_after_the_first(tiny):
    _, tok = tiny
    enc = encode_example(tok, Example("a", text="The quick brown fox."), 64)
    assert enc.labels == enc.input_ids
    assert enc.n_scored == len(enc) - 1


def test_pair_scores_only_the_response_and_eos(tiny):
    _, tok = tiny
    ex = Example("p", prompt="What is two plus two?", response=" four")
    enc = encode_example(tok, ex, 64)
    resp = tok(" four", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(enc) - len(resp)
    assert all(t == IGNORE_INDEX for t in enc.labels[:n_prompt])
    assert list(enc.labels[n_prompt:]) == resp
    assert enc.n_scored == len(resp)


def test_chat_template_wraps_the_prompt(tiny):
    _, tok = tiny
    ex = Example("p", prompt="Hi?", response="Hello.")
    plain = encode_example(tok, ex, 64)
    chat = encode_example(tok, ex, 64, chat=True)
    assert len(chat) > len(plain)
    assert tok.decode(list(chat.input_ids)).startswith("<|im_start|>user")
    assert chat.n_scored == plain.n_scored


def test_overflow_error_and_truncation(tiny):
    _, tok = tiny
    ex = Example("long", text="word " * 100)
    with pytest.raises(DataError, match="more than max_length"):
        encode_example(tok, ex, 16, on_overflow="error")
    assert len(encode_example(tok, ex, 16)) == 16


def test_max_length_beyond_context_is_refused(tiny):
    _, tok = tiny
    with pytest.raises(DataError, match="longer than the model's context"):
        encode_examples(tok, [Example("a", text="hi there")], 4096, model_max_length=128)


def test_prompt_that_fills_the_window_is_an_error(tiny):
    _, tok = tiny
    with pytest.raises(DataError, match="no scored tokens"):
        encode_example(tok, Example("p", prompt="word " * 50, response="yes"), 8)


def test_collate_pads_to_the_longest_member(tiny):
    _, tok = tiny
    encs = encode_examples(tok, [Example("a", text="short"), Example("b", text="a much longer sentence here")], 64)
    batch = collate(encs, tok.pad_token_id)
    assert batch["input_ids"].shape == (2, max(len(e) for e in encs))
    assert int(batch["attention_mask"][0].sum()) == len(encs[0])
    assert (batch["labels"][0, len(encs[0]):] == IGNORE_INDEX).all()


def test_example_needs_text_or_pair():
    with pytest.raises(DataError):
        Example("bad")
    with pytest.raises(DataError):
        Example("bad", text="x", prompt="p", response="r")


def test_chat_pair_is_the_rendered_conversation_up_to_the_end_of_turn(tiny):
    _, tok = tiny
    # written for a "Q: ...\nA:" prompt: the leading space and the trailing newline are not part of the turns
    ex = Example("p", prompt="What is two plus two?\n", response=" 4")
    enc = encode_example(tok, ex, 128, chat=True)
    rendered = tok.apply_chat_template([{"role": "user", "content": "What is two plus two?"},
                                        {"role": "assistant", "content": "4"}], tokenize=False)
    assert rendered.endswith("4<|im_end|>\n")
    full = tok(rendered, add_special_tokens=False)["input_ids"]
    assert list(enc.input_ids) == full[:-1]  # everything the model sees and says, up to its end-of-turn token
    scored = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tok.decode(scored) == "4<|im_end|>"  # the answer and the end of the turn, nothing of the template


def test_plain_pair_is_prompt_plus_response_as_given(tiny):
    _, tok = tiny
    ex = Example("p", prompt="What is two plus two?\n", response="4")
    enc = encode_example(tok, ex, 128)
    assert tok.decode(list(enc.input_ids)) == "What is two plus two?\n4<|im_end|>"
    assert tok.decode([t for t in enc.labels if t != IGNORE_INDEX]) == "4<|im_end|>"


def test_end_of_turn_falls_back_to_eos_when_the_template_renders_answers_otherwise(tiny):
    import copy

    from forgetscope.data.encoding import end_of_turn_ids

    _, tok = tiny
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]
    odd = copy.deepcopy(tok)  # a template that drops assistant turns: no end-of-turn token can be read off it
    odd.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>user\n{{ m['content'] }}"
                         "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                         "{% endif %}")
    assert end_of_turn_ids(odd) == [tok.eos_token_id]


def test_truncation_is_counted(tiny):
    from forgetscope.data.encoding import truncation_stats

    _, tok = tiny
    encs = encode_examples(tok, [Example("long", text="word " * 40), Example("short", text="a few words")], 16)
    assert encs[0].n_truncated == len(tok("word " * 40)["input_ids"]) - 16 > 0 and encs[1].n_truncated == 0
    assert truncation_stats(encs) == {"truncated_examples": 1, "truncated_tokens": encs[0].n_truncated}


def test_texts_and_responses_that_tokenise_to_too_little_are_one_line_errors(tiny):
    _, tok = tiny
    with pytest.raises(DataError, match=r"example 'dot': its text '\.' tokenises to 1 token\(s\)"):
        encode_example(tok, Example("dot", text="."), 64)
    with pytest.raises(DataError, match="empty response"):
        Example("e", prompt="Say nothing.", response="  ")
