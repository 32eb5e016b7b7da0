"""The network's contract: shapes, RETRO causality, valid log-probabilities, clear input errors."""

from dataclasses import replace

import pytest
import torch

from retro.config import PRESETS, RetroConfig
from retro.copy_head import NEIGHBOUR_SALIENCE_SCALE
from retro.model import Retro

from .conftest import CONFIGS, make_model, tiny_config

M = 4  # chunk size of the tiny configs


def random_inputs(cfg: RetroConfig, B=2, T=18, k=2, r=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, cfg.vocab_size, (B, T), generator=g)
    neighbours = torch.randint(2, cfg.vocab_size, (B, T // cfg.chunk_size, k, r), generator=g)
    return tokens, neighbours


@pytest.mark.parametrize("name", CONFIGS)
def test_output_shape_and_normalisation(name):
    cfg = CONFIGS[name]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    out = model(tokens, neighbours)
    assert out.shape == (2, 18, cfg.vocab_size)
    assert torch.isfinite(out).all()
    # log-probabilities (of the mixture, with the copy head): they sum to one
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 18), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("p", [0, 3, 4, 9, 17])
def test_changing_token_p_moves_no_earlier_logit(name, p):
    cfg = CONFIGS[name]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    changed = tokens.clone()
    changed[:, p] = (changed[:, p] + 1) % cfg.vocab_size
    a, b = model(tokens, neighbours), model(changed, neighbours)
    torch.testing.assert_close(a[:, :p], b[:, :p], atol=0, rtol=0)
    assert not torch.allclose(a[:, p:], b[:, p:])


@pytest.mark.parametrize("name", ["copy+prev2", "copy+prev2+match3", "copy, no prev", "no copy head"])
@pytest.mark.parametrize("u", [0, 1, 3])
def test_neighbours_of_chunk_u_reach_only_positions_from_its_last_token(name, u):
    cfg = CONFIGS[name]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    changed = neighbours.clone()
    changed[:, u] = torch.randint(
        2, cfg.vocab_size, changed[:, u].shape, generator=torch.Generator().manual_seed(9)
    )
    a, b = model(tokens, neighbours), model(tokens, changed)
    first = (u + 1) * M - 1  # paper section 2.4: i >= (u+1)m - 1
    torch.testing.assert_close(a[:, :first], b[:, :first], atol=0, rtol=0)
    assert (a[:, first] - b[:, first]).abs().max() > 1e-6


def test_baseline_ignores_neighbours_and_none_gives_plain_decoder():
    base = make_model(CONFIGS["baseline"])
    tokens, neighbours = random_inputs(CONFIGS["baseline"])
    torch.testing.assert_close(base(tokens, neighbours), base(tokens, None), atol=0, rtol=0)
    retro = make_model(CONFIGS["copy+prev2"])
    with_nb, without = retro(tokens, neighbours), retro(tokens, None)
    # before the first chunk closes, retrieval cannot matter; afterwards it does
    torch.testing.assert_close(with_nb[:, : M - 1], without[:, : M - 1], atol=1e-6, rtol=0)
    assert not torch.allclose(with_nb[:, M - 1 :], without[:, M - 1 :])


@pytest.mark.parametrize("k,r", [(1, 8), (3, 8), (2, 5), (5, 1)])
def test_any_k_and_shorter_neighbours(k, r):
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg, k=k, r=r)
    assert model(tokens, neighbours).shape == (2, 18, cfg.vocab_size)


@pytest.mark.parametrize("T", [1, 3, 4, 5, 16])
def test_short_and_ragged_sequences(T):
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg, T=T)
    assert neighbours.shape[1] == T // M
    assert model(tokens, neighbours).shape == (2, T, cfg.vocab_size)


def test_all_padding_neighbours_stay_finite():
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    neighbours[:, 1] = cfg.pad_id  # chunk 1 retrieved nothing
    out = model(tokens, neighbours)
    assert torch.isfinite(out).all()


def test_copy_head_can_copy_a_neighbour_token():
    """A neighbour token's probability rises when the copy head points at it (mass leaves the vocabulary)."""
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    target = int(neighbours[0, 0, 0, 3])
    plain = model(tokens, None)[0, M - 1, target].exp()
    mixed = model(tokens, neighbours)[0, M - 1, target].exp()
    assert mixed > plain


def test_ngram_match_points_at_the_token_after_the_same_three_tokens():
    """With the n-gram match, an untrained model already copies the token that follows, in a
    neighbour, the three tokens its position ends with; and not one that follows only two of them."""
    cfg = CONFIGS["copy+prev2+match3"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    t = M - 1  # the first position that sees chunk 0's neighbours
    a, b, c = tokens[0, t - 2 : t + 1].tolist()
    x, y = 7, 8  # their other occurrences in chunk 0's neighbours are replaced first
    neighbours[0, 0] = torch.where(torch.isin(neighbours[0, 0], torch.tensor([x, y])), 9, neighbours[0, 0])
    neighbours[0, 0, 0, 1:5] = torch.tensor([a, b, c, x])  # "a b c" -> x
    neighbours[0, 0, 1, 1:5] = torch.tensor([5, b, c, y])  # "? b c" -> y: a weaker match
    p = model(tokens, neighbours)[0, t].exp()
    assert p[x] > 0.5 and p[x] > 5 * p[y]
    with torch.no_grad():
        model.copy_head.match_bonus.zero_()
    assert model(tokens, neighbours)[0, t].exp()[x] < 0.1  # the match, not the random weights


def test_bag_match_equals_its_definition():
    """CopyHead.bag's window sums equal the definition, term by term: for neighbour token j,
    sum_i w[q_i] sum_d u[d] [q_i == token j-1-d of j's own neighbour] (no term crosses neighbours)."""
    cfg = CONFIGS["copy+match3+bag6"]
    head = make_model(cfg).copy_head
    g = torch.Generator().manual_seed(3)
    W, r, k, N, Tq = cfg.copy_bag_window, cfg.retrieved_len, 3, 2, 4
    ids = torch.randint(1, 12, (N, k * r), generator=g)  # a small alphabet: many coincidences
    query = torch.randint(0, 12, (N, Tq, cfg.copy_context_tokens), generator=g)  # 0 = pad
    with torch.no_grad():
        head.bag_weight.copy_(torch.randn(cfg.vocab_size, generator=g))
        head.bag_distance.copy_(torch.randn(W, generator=g))
        got = head.bag(query, ids)
    want = torch.zeros(N, Tq, k * r)
    for n in range(N):
        for t in range(Tq):
            for j in range(k * r):
                start = (j // r) * r  # j's own neighbour begins here
                for i in range(W):
                    q = int(query[n, t, i])
                    for d in range(W):
                        if q != cfg.pad_id and j - 1 - d >= start and int(ids[n, j - 1 - d]) == q:
                            want[n, t, j] += head.bag_weight[q] * head.bag_distance[d]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bag_match_points_after_the_questions_words_in_any_order():
    """The question ends "... c b a ?" and a neighbour holds "a b c x": the n-gram match finds no
    aligned run, the bag match (salient a, b, c; nearer words weigh more) makes x the most likely
    copy rather than the tokens after it; at zero weight the bag adds nothing."""
    cfg = CONFIGS["copy+bag5, no n-gram"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    t = M - 1
    a, b, c, x, q_mark = 20, 21, 22, 23, 24
    tokens[0, t - 3 : t + 1] = torch.tensor([c, b, a, q_mark])
    keep_out = torch.tensor([a, b, c, x, q_mark])
    neighbours[0, 0] = torch.where(torch.isin(neighbours[0, 0], keep_out), 9, neighbours[0, 0])
    neighbours[0, 0, 0, 1:5] = torch.tensor([a, b, c, x])
    with torch.no_grad():
        model.copy_head.bag_weight.zero_()
        before = model(tokens, neighbours)[0, t].exp()[x]
        model.copy_head.bag_weight[torch.tensor([a, b, c])] = 2.0
        model.copy_head.bag_distance.copy_(torch.tensor([2.0, 1.0, 0.5, 0.25, 0.1]))
        after = model(tokens, neighbours)[0, t].exp()
    assert before < 0.1
    assert after[x] > 0.5


def test_neighbour_match_equals_its_definition():
    """CopyHead.neighbour_bag: every token of neighbour n gets sum_i v[q_i] [q_i occurs anywhere in
    neighbour n] over the position's last W tokens (padding excluded); nothing crosses neighbours."""
    cfg = CONFIGS["copy+match3+bag6+neighbour"]
    head = make_model(cfg).copy_head
    g = torch.Generator().manual_seed(4)
    W, r, k, N, Tq = cfg.copy_bag_window, cfg.retrieved_len, 3, 2, 4
    ids = torch.randint(1, 30, (N, k * r), generator=g)
    query = torch.randint(0, 30, (N, Tq, cfg.copy_context_tokens), generator=g)  # 0 = pad
    with torch.no_grad():
        head.neighbour_weight.copy_(torch.randn(cfg.vocab_size, generator=g))
        got = head.neighbour_bag(query, ids)
    want = torch.zeros(N, Tq, k * r)
    for n in range(N):
        for t in range(Tq):
            for j in range(k * r):
                own = ids[n, (j // r) * r : (j // r + 1) * r].tolist()
                for i in range(W):
                    q = int(query[n, t, i])
                    if q != cfg.pad_id and q in own:
                        want[n, t, j] += NEIGHBOUR_SALIENCE_SCALE * head.neighbour_weight[q]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_neighbour_match_prefers_the_neighbour_naming_the_asked_entity():
    """The question ends "f e ?" (relation word f, entity e); two neighbours state a value after f,
    only the first also names e, far from its value (beyond the bag's reach). The bag match alone
    points after f in both alike; with a salience on e the neighbour match makes the first one's
    value the likely copy; at zero weight it adds nothing."""
    cfg = CONFIGS["copy+match3+bag6+neighbour"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg)
    t = M - 1
    e, f, right, wrong, q_mark = 40, 41, 42, 43, 44
    keep_out = torch.tensor([e, f, right, wrong, q_mark])
    neighbours[0, 0] = torch.where(torch.isin(neighbours[0, 0], keep_out), 9, neighbours[0, 0])
    tokens[0] = torch.where(torch.isin(tokens[0], keep_out), 9, tokens[0])
    tokens[0, t - 2 : t + 1] = torch.tensor([f, e, q_mark])
    neighbours[0, 0, 0, 0] = e  # names the entity, at the start
    neighbours[0, 0, 0, -2:] = torch.tensor([f, right])  # the value at the far end
    neighbours[0, 0, 1, -2:] = torch.tensor([f, wrong])
    with torch.no_grad():
        head = model.copy_head
        head.bag_weight.zero_()
        head.bag_weight[f] = 4.0
        head.bag_distance.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
        head.neighbour_weight.zero_()
        before = model(tokens, neighbours)[0, t].exp()
        head.neighbour_weight[e] = 6.0 / NEIGHBOUR_SALIENCE_SCALE
        after = model(tokens, neighbours)[0, t].exp()
    assert abs(before[right] - before[wrong]) < 0.1  # the bag alone cannot tell them apart
    assert after[right] > 0.5 and after[wrong] < 0.1


def test_match_gate_scales_each_match_by_its_own_column():
    """With the match gate, column i < n scales the n-gram match's offset i and the next columns the
    bag and the neighbour match, in that order: a gate with constant log-scales (zero weights,
    bias log s) gives the pointer of the ungated head whose bonuses are multiplied by s; a gate
    that reads the state gives each position its own scales."""
    gated_cfg = CONFIGS["copy+match3+bag6+neighbour+gate"]
    gated = make_model(gated_cfg)
    plain = Retro(gated_cfg.replace(copy_match_gate=False)).eval()
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if "match_gate" not in k})
    tokens, neighbours = random_inputs(gated_cfg)
    for i, row in enumerate(tokens):  # repeat a neighbour's tokens in the prompt: matches fire
        row[M - 4 : M] = neighbours[i, 0, 0, 2:6]
    n = gated_cfg.copy_match_tokens
    scales = torch.tensor([0.5, 2.0, 3.0, 0.25, 4.0])  # offsets 0, 1, 2; bag; neighbour match
    head, twin = gated.copy_head, plain.copy_head
    with torch.no_grad():
        head.match_gate.weight.zero_()
        head.match_gate.bias.copy_(scales.log())
        twin.match_bonus.mul_(scales[:n])
        twin.bag_weight.mul_(scales[n])
        twin.neighbour_weight.mul_(scales[n + 1])
        torch.testing.assert_close(gated(tokens, neighbours), plain(tokens, neighbours), rtol=1e-4, atol=1e-4)
        head.match_gate.bias.zero_()  # scale 1 everywhere: the ungated head with its own bonuses
        plain.load_state_dict({k: v for k, v in gated.state_dict().items() if "match_gate" not in k})
        torch.testing.assert_close(gated(tokens, neighbours), plain(tokens, neighbours), rtol=1e-4, atol=1e-4)
        head.match_gate.weight.normal_(0, 1.0)  # now the scales depend on each position's state
        assert not torch.allclose(gated(tokens, neighbours), plain(tokens, neighbours), atol=1e-3)
    with pytest.raises(ValueError, match="copy_match_gate"):
        tiny_config(copy_match_gate=True, copy_match_tokens=0, copy_bag_window=0)
    assert "copy_match_gate" not in tiny_config().to_dict()  # written only when on
    assert RetroConfig.from_dict(gated_cfg.to_dict()) == gated_cfg


@pytest.mark.parametrize("name", CONFIGS)
def test_loss_equals_nll_of_forward(name):
    cfg = CONFIGS[name]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg, T=17)
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    targets[0, :3] = -100  # ignored positions (e.g. left padding)
    nb = neighbours[:, : inputs.shape[1] // M]
    logp = model(inputs, nb)
    keep = targets != -100
    ref = -logp.gather(-1, targets.clamp_min(0)[..., None])[..., 0][keep].mean()
    torch.testing.assert_close(model.loss(inputs, nb, targets), ref, atol=1e-5, rtol=1e-5)


def test_gradients_reach_encoder_cca_and_copy_head():
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg).train()
    tokens, neighbours = random_inputs(cfg, T=17)
    model.loss(tokens[:, :-1], neighbours, tokens[:, 1:]).backward()
    for prefix in ("encoder.", "blocks.1.cca.", "copy_head.", "encoder.prev_in."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads), prefix
        assert any(g.abs().sum() > 0 for g in grads), prefix


@pytest.mark.parametrize(
    "tokens,neighbours,message",
    [
        (torch.zeros(2, 8), None, r"LongTensor of shape \[B, T\]"),
        (torch.zeros(8, dtype=torch.long), None, r"LongTensor of shape \[B, T\]"),
        (torch.zeros(1, 65, dtype=torch.long), None, "exceeds max_seq_len=64"),
        (torch.full((1, 8), 300, dtype=torch.long), None, r"token ids must lie in \[0, 300\)"),
        (
            torch.zeros(2, 8, dtype=torch.long),
            torch.zeros(2, 3, 2, 8, dtype=torch.long),
            r"shape \[B=2, 2, k, r<=8\]",
        ),
        (
            torch.zeros(2, 8, dtype=torch.long),
            torch.zeros(2, 2, 2, 9, dtype=torch.long),
            r"shape \[B=2, 2, k, r<=8\]",
        ),
        (
            torch.zeros(2, 8, dtype=torch.long),
            torch.zeros(1, 2, 2, 8, dtype=torch.long),
            r"shape \[B=2, 2, k, r<=8\]",
        ),
        (
            torch.zeros(2, 8, dtype=torch.long),
            torch.zeros(2, 2, 8, dtype=torch.long),
            r"LongTensor of shape \[B=2, 2",
        ),
        (torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 2, 2, 8), r"LongTensor of shape \[B=2, 2"),
    ],
)
def test_bad_inputs_name_the_expected_shape(tokens, neighbours, message):
    model = make_model(CONFIGS["copy+prev2"])
    with pytest.raises(ValueError, match=message):
        model(tokens, neighbours)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="not divisible"):
        tiny_config(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="outside"):
        tiny_config(cca_layers=(5,))
    cfg = tiny_config()
    assert RetroConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown RetroConfig fields"):
        RetroConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        RetroConfig.from_preset("huge")


def test_presets_build_and_baselines_are_10x():
    counts = {}
    for name in ("tiny", "tiny-baseline", "demo", "demo-baseline", "small"):
        counts[name] = Retro(PRESETS[name]).parameter_counts()["non_embedding"]
    assert PRESETS["tiny-baseline"].cca_layers == () and PRESETS["small"].uses_retrieval
    assert counts["tiny-baseline"] >= 10 * counts["tiny"]
    assert counts["demo-baseline"] >= 10 * counts["demo"]
    # also against the shipped demo's configuration: the copy head's bag and neighbour matches
    shipped_demo = replace(PRESETS["demo"], copy_bag_window=16, copy_neighbour_bag=True)
    assert counts["demo-baseline"] >= 10 * Retro(shipped_demo).parameter_counts()["non_embedding"]
    assert 20e6 <= counts["small"] <= 35e6
    # small-baseline is too big to build in a unit test; its size follows from the config
    sb = PRESETS["small-baseline"]
    assert 12 * sb.n_layers * sb.d_model**2 >= 10 * counts["small"]


def test_gradients_stay_finite_with_padding_neighbours_and_ignored_targets():
    """Rows where no neighbour token matches the target, all-padding neighbours and ignored
    targets (clamped onto the pad id) must not turn the loss's gradient into NaN."""
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg).train()
    tokens, neighbours = random_inputs(cfg, T=17)
    neighbours[0] = cfg.pad_id  # nothing retrieved for the first sequence
    neighbours[1, :, :, ::2] = cfg.pad_id  # partly padded neighbours
    targets = tokens[:, 1:].clone()
    targets[:, :5] = -100
    loss = model.loss(tokens[:, :-1], neighbours, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
