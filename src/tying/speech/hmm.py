"""Phone HMMs shared by every word that uses them: batched log-space forward, Viterbi, Baum-Welch.

A word model is the concatenation of its phones' left-to-right HMMs (3 emitting states each,
diagonal-Gaussian-mixture emissions). Each word state points into one table of *global* states
(phone, state), so two words that share a phone share its parameters, and a word never heard
in training has a model as soon as the lexicon gives its phones.

The algorithms work on padded batches: utterances (B) of different lengths (``lengths``) against
models (K) of different numbers of states (padding states have emission −∞). The only Python
loop in the hot path is over time; distributions, states, models and utterances are tensor axes.

Shapes used throughout: ``log_b`` (B, T, K, N) emission log-densities per word state;
``log_stay``/``log_next`` (K, N) or (B, K, N) self-loop and advance log-probabilities;
``last`` (K,) or (B, K) index of each model's final state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .lexicon import Lexicon

__all__ = ["PhoneHMMs", "diag_gmm_logprob", "forward_dense", "forward_l2r", "pad_features",
           "posteriors_l2r", "viterbi_dense", "viterbi_l2r"]

NEG_INF = float("-inf")


def pad_features(features: Sequence, *, dtype=torch.float64, device=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (T_i, D) feature arrays into a zero-padded (B, T_max, D) tensor and lengths (B,).

    Raises:
        ValueError: no utterances, an empty utterance, or differing feature dimensions.
    """
    if len(features) == 0:
        raise ValueError("features is empty: give at least one (frames, dims) array")
    arrays = [f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
              for f in features]
    dims = {a.shape[-1] if a.ndim == 2 else None for a in arrays}
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise ValueError(f"features[{i}] must be 2-D (frames, dims), got shape "
                             f"{tuple(a.shape)}")
        if a.shape[0] == 0:
            raise ValueError(f"features[{i}] has 0 frames (empty audio)")
    if len(dims) != 1:
        raise ValueError(f"all utterances must have the same feature dimension, got {sorted(dims)}")
    lengths = [a.shape[0] for a in arrays]
    # One NumPy buffer filled row by row: far cheaper than a tensor per utterance.
    x = np.zeros((len(arrays), max(lengths), dims.pop()),
                 dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    for i, a in enumerate(arrays):
        x[i, : len(a)] = a
    return torch.from_numpy(x).to(device), torch.tensor(lengths, device=device)


def diag_gmm_logprob(x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
                     log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """log N(x; μ_um, diag σ²_um) (+ log w_um) for every frame and component: (F, D) -> (F, U, M).

    Two matrix products instead of a loop over distributions:
    −½ Σ_d (x² p − 2 x μ p + μ² p) − ½ Σ_d log σ² − D/2 log 2π, with p = 1/σ².
    """
    U, M, D = means.shape
    prec = 1.0 / variances
    const = -0.5 * (D * math.log(2 * math.pi) + torch.log(variances).sum(-1)
                    + (means * means * prec).sum(-1))                       # (U, M)
    if log_weights is not None:
        const = const + log_weights
    out = torch.addmm(const.reshape(1, U * M), x * x, (-0.5 * prec).reshape(U * M, D).T)
    out.addmm_(x, (means * prec).reshape(U * M, D).T)
    return out.reshape(-1, U, M)


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp that keeps exp off its slow underflow path; rows of −∞ stay −∞."""
    if x.shape[dim] == 1:
        return x.squeeze(dim)
    m = x.amax(dim, keepdim=True)
    finite = torch.isfinite(m)
    ms = torch.where(finite, m, torch.zeros_like(m))
    out = ms + torch.log(torch.exp((x - ms).clamp_min(-80.0)).sum(dim, keepdim=True))
    return out.masked_fill(~finite, NEG_INF).squeeze(dim)


def _shift_right(a: torch.Tensor) -> torch.Tensor:
    """a[..., n-1] at position n; −∞ at 0 (the state a transition 'advance' comes from)."""
    return torch.cat([torch.full_like(a[..., :1], NEG_INF), a[..., :-1]], -1)


def _shift_left(a: torch.Tensor) -> torch.Tensor:
    return torch.cat([a[..., 1:], torch.full_like(a[..., :1], NEG_INF)], -1)


def _end_vector(log_next, last, n_states: int, end: str) -> torch.Tensor:
    """Log end weights per state: the exit from the final state, or 0 everywhere for 'any'."""
    ar = torch.arange(n_states, device=log_next.device)
    if end == "final":
        return torch.where(ar == last.unsqueeze(-1), log_next, torch.full_like(log_next, NEG_INF))
    if end == "any":
        return torch.zeros_like(log_next)
    raise ValueError(f"end must be 'final' (leave through the last state) or 'any' (hmmlearn's "
                     f"convention), got {end!r}")


_NEG = -1e30  # "impossible" inside the recursions: finite, so no −∞ − −∞ = NaN and no slow path


def _time_major(log_b: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> a contiguous (T, B, ...) copy with −∞ raised to the finite floor."""
    tm = log_b.transpose(0, 1)
    return tm.clamp_min(_NEG) if tm.is_contiguous() else tm.contiguous().clamp_min_(_NEG)


def _logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(eᵃ + eᵇ) for finite inputs, without CPU slow paths.

    ``torch.logaddexp`` and ``exp`` of −∞ or of an underflowing argument take a slow
    special-value path on CPU (10-100x). Here the gap |a − b| is capped at 60 (e^−60 ≈ 1e−26,
    below the resolution of the sum), and the work is done in place.
    """
    gap = a - b
    gap.abs_().clamp_(max=60.0).neg_().exp_().add_(1.0).log_()   # log1p is slower here
    return torch.maximum(a, b).add_(gap)


def _exp(x: torch.Tensor) -> torch.Tensor:
    """exp for log-probabilities, flushing everything below e^−80 to 0 without the slow path."""
    return torch.exp(x.clamp_min(-80.0)) * (x > -80.0)


def _l2r_transitions(log_stay: torch.Tensor, log_next: torch.Tensor, last: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Floored (stay, advance) log-probabilities (..., N); advancing past ``last`` is −∞-like.

    Never advancing past a model's final state makes padding states (and their emissions)
    unreachable whatever their values.
    """
    beyond = torch.arange(log_next.shape[-1], device=log_next.device) >= last.unsqueeze(-1)
    return log_stay.clamp_min(_NEG), log_next.clamp_min(_NEG).masked_fill(beyond, _NEG)


def forward_l2r(log_b: torch.Tensor, log_stay: torch.Tensor, log_next: torch.Tensor,
                lengths: torch.Tensor, last: torch.Tensor, *, end: str = "final",
                return_alpha: bool = False):
    """Log-likelihood of each utterance under each left-to-right model (start in state 0).

    Log-space recursion α_t(n) = logaddexp(α_{t−1}(n) + log a_nn, α_{t−1}(n−1) + log a_{n−1,n})
    + log b_n(x_t), for all utterances, models and states at once; frames past an utterance's
    length leave α unchanged.

    Args:
        log_b: (B, T, K, N) emission log-densities (−∞ for padding states).
        log_stay, log_next: (K, N) or (B, K, N) log self-loop / advance probabilities.
        lengths: (B,) frames per utterance (frames past the length are ignored).
        last: (K,) or (B, K) each model's final state.
        end: ``final`` — paths end by leaving the final state (HTK's exit transition);
            ``any`` — sum over every state at the last frame (hmmlearn's ``score``).
        return_alpha: also return the forward variables (T, B, K, N).

    Returns:
        (B, K) log-likelihoods (−∞ where a model has more states than the utterance has
        frames), and the alphas if asked.

    Example:
        >>> log_b = torch.zeros(1, 4, 1, 2)
        >>> s = torch.log(torch.tensor([[0.5, 0.5]]))
        >>> forward_l2r(log_b, s, s, torch.tensor([4]), torch.tensor([1]), end="any").exp()
        tensor([[0.5000]])
    """
    B, T, K, N = log_b.shape
    log_bt = _time_major(log_b)                                            # (T, B, K, N)
    stay, nxt = _l2r_transitions(log_stay, log_next, last)
    ragged = bool((lengths < T).any())
    alive = torch.arange(T, device=log_b.device).unsqueeze(0) < lengths.unsqueeze(1)
    alpha = torch.full((B, K, N), _NEG, dtype=log_b.dtype, device=log_b.device)
    alpha[..., 0] = log_bt[0, :, :, 0]
    alphas = [alpha] if return_alpha else None
    # buf[..., 0] stays "impossible"; buf[..., 1:] gets α + log a_{n,n+1}, so buf[..., :-1]
    # is the advance into each state without allocating a shifted copy.
    buf = torch.full((B, K, N + 1), _NEG, dtype=log_b.dtype, device=log_b.device)
    for t in range(1, T):
        torch.add(alpha, nxt, out=buf[..., 1:])
        new = _logaddexp(alpha + stay, buf[..., :-1]).add_(log_bt[t])
        alpha = torch.where(alive[:, t, None, None], new, alpha) if ragged else new
        if return_alpha:
            alphas.append(alpha)
    ll = torch.logsumexp(alpha + _end_vector(log_next, last, N, end), dim=-1)
    # Paths through impossible states only (e.g. more states than frames) are exactly −∞.
    ll = ll.masked_fill(ll < _NEG / 2, NEG_INF)
    if return_alpha:
        return ll, torch.stack(alphas)
    return ll


def posteriors_l2r(log_b: torch.Tensor, log_stay: torch.Tensor, log_next: torch.Tensor,
                   lengths: torch.Tensor, last: torch.Tensor, *, end: str = "final"):
    """State occupancies and expected self-loops of one left-to-right model per utterance.

    Args:
        log_b: (B, T, N) emission log-densities; log_stay, log_next: (B, N); last: (B,).

    Returns:
        ``(ll, gamma, stays)``: log-likelihoods (B,), occupancies γ (B, T, N) (0 past the
        length), and Σ_t ξ_t(n→n) (B, N), the expected self-loop counts.
    """
    T, N = log_b.shape[1:]
    ll, alpha = forward_l2r(log_b.unsqueeze(2), log_stay.unsqueeze(1), log_next.unsqueeze(1),
                            lengths, last.unsqueeze(1), end=end, return_alpha=True)
    alpha, ll = alpha[:, :, 0].transpose(0, 1), ll[:, 0]                      # (B, T, N), (B,)
    end_vec = _end_vector(log_next, last, N, end).clamp_min(_NEG)             # (B, N)
    log_b = log_b.clamp_min(_NEG)
    stay, nxt = log_stay.clamp_min(_NEG), log_next.clamp_min(_NEG)
    beta = end_vec
    betas = [beta]
    for t in range(T - 2, -1, -1):
        g = log_b[:, t + 1] + beta
        moved = torch.cat([(nxt[..., :-1] + g[..., 1:]), g.new_full((*g.shape[:-1], 1), _NEG)],
                          -1)
        new = _logaddexp(stay + g, moved)
        beta = torch.where((t < lengths - 1)[:, None], new, end_vec)
        betas.append(beta)
    beta = torch.stack(betas[::-1], 1)                                        # (B, T, N)
    alive = (torch.arange(T) < lengths.unsqueeze(1)).unsqueeze(-1)           # (B, T, 1)
    gamma = _exp(alpha + beta - ll[:, None, None]) * alive
    inner = (torch.arange(T - 1) < (lengths - 1).unsqueeze(1)).unsqueeze(-1)
    xi = alpha[:, :-1] + stay[:, None] + log_b[:, 1:] + beta[:, 1:] - ll[:, None, None]
    stays = (_exp(xi) * inner).sum(1)
    return ll, gamma, stays


def viterbi_l2r(log_b: torch.Tensor, log_stay: torch.Tensor, log_next: torch.Tensor,
                lengths: torch.Tensor, last: torch.Tensor, *, end: str = "final",
                return_path: bool = False):
    """Best-path log-probabilities (B, K), and with ``return_path`` the state paths (B, K, T).

    Path entries past an utterance's length are −1.
    """
    B, T, K, N = log_b.shape
    log_bt = _time_major(log_b)                                            # (T, B, K, N)
    log_stay, adv = _l2r_transitions(log_stay, log_next, last)
    ragged = bool((lengths < T).any())
    alive = torch.arange(T, device=log_b.device).unsqueeze(0) < lengths.unsqueeze(1)
    delta = torch.full((B, K, N), _NEG, dtype=log_b.dtype, device=log_b.device)
    delta[..., 0] = log_bt[0, :, :, 0]
    buf = torch.full((B, K, N + 1), _NEG, dtype=log_b.dtype, device=log_b.device)
    moved = []
    for t in range(1, T):
        stay = delta + log_stay
        torch.add(delta, adv, out=buf[..., 1:])
        move = buf[..., :-1]
        if return_path:
            moved.append(move > stay)                                      # advanced into n
        new = torch.maximum(stay, move).add_(log_bt[t])
        delta = torch.where(alive[:, t, None, None], new, delta) if ragged else new
    final = delta + _end_vector(log_next, last, N, end)
    score, state = final.max(-1)
    score = score.masked_fill(score < _NEG / 2, NEG_INF)
    if not return_path:
        return score
    path = torch.full((B, K, T), -1, dtype=torch.long, device=log_b.device)
    ends = (lengths - 1).view(B, 1).expand(B, K)
    cur = state
    for t in range(T - 1, -1, -1):
        here = t <= ends                       # cur is the final state until t reaches the end
        path[..., t] = torch.where(here, cur, path[..., t])
        if t > 0:
            back = moved[t - 1].gather(-1, cur.unsqueeze(-1)).squeeze(-1).long()
            cur = torch.where(here, cur - back, cur)
    return score, path


def forward_dense(log_b: torch.Tensor, log_pi: torch.Tensor, log_A: torch.Tensor,
                  lengths: torch.Tensor) -> torch.Tensor:
    """Forward log-likelihood (B,) for any topology: log_b (B, T, N), log_pi (N,), log_A (N, N).

    Ends in any state (hmmlearn's ``score`` convention).
    """
    T = log_b.shape[1]
    alpha = log_pi + log_b[:, 0]
    for t in range(1, T):
        new = torch.logsumexp(alpha.unsqueeze(-1) + log_A, dim=1) + log_b[:, t]
        alpha = torch.where((t < lengths)[:, None], new, alpha)
    return torch.logsumexp(alpha, -1)


def viterbi_dense(log_b: torch.Tensor, log_pi: torch.Tensor, log_A: torch.Tensor,
                  lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-path log-probabilities (B,) and paths (B, T) (−1 past the length), any topology."""
    B, T = log_b.shape[:2]
    delta = log_pi + log_b[:, 0]
    ptrs = []
    for t in range(1, T):
        cand = delta.unsqueeze(-1) + log_A                                  # (B, from, to)
        best, arg = cand.max(1)
        delta = torch.where((t < lengths)[:, None], best + log_b[:, t], delta)
        ptrs.append(arg)
    score, cur = delta.max(-1)
    path = torch.full((B, T), -1, dtype=torch.long, device=log_b.device)
    ends = lengths - 1
    for t in range(T - 1, -1, -1):
        here = t <= ends
        path[:, t] = torch.where(here, cur, path[:, t])
        if t > 0:
            prev = ptrs[t - 1].gather(1, cur.unsqueeze(1)).squeeze(1)
            cur = torch.where(here, prev, cur)
    return score, path


def _forward_differentiable(log_b, log_stay, log_next, lengths, last, end):
    """Log-space forward (B,) of one left-to-right model per utterance, fit for autograd.

    log_b (B, T, N), log_stay/log_next (B, N), last (B,). No in-place tricks: slower than
    `forward_l2r`, but every operation has a gradient (−∞ is replaced by a finite floor).
    """
    B, T, N = log_b.shape
    log_b = log_b.clamp_min(_NEG)
    stay, nxt = _l2r_transitions(log_stay, log_next, last)
    start = torch.full((B, N), _NEG, dtype=log_b.dtype)
    start[:, 0] = 0.0
    alpha = start + log_b[:, 0]
    floor = torch.full((B, 1), _NEG, dtype=log_b.dtype)
    for t in range(1, T):
        moved = torch.cat([floor, (alpha + nxt)[:, :-1]], 1)
        new = torch.logaddexp(alpha + stay, moved) + log_b[:, t]
        alpha = torch.where((t < lengths).unsqueeze(1), new, alpha)
    end_vec = _end_vector(log_next, last, N, end).clamp_min(_NEG)
    return torch.logsumexp(alpha + end_vec, -1)

class PhoneHMMs:
    """Left-to-right phone HMMs with diagonal-GMM emissions, trained by embedded Baum-Welch
    (`fit`) or by gradient ascent on the forward log-likelihood (`fit_gradient`).

    Every unit of the lexicon (a phone, or ``sil``) has ``n_states`` emitting states; a word is
    the concatenation of its units, and every word that uses a unit uses the *same* parameters.
    Give `Lexicon.unshared()` instead and each word gets private units: the whole-word baseline.

    Args:
        n_states: emitting states per unit.
        n_mix: Gaussian components per state.
        n_iter: Baum-Welch iterations.
        var_floor: variance floor, as a fraction of the global per-dimension variance.
        self_loop: initial self-loop probability.
        seed: seeds the initial mixture perturbation.
        dtype: float32 is enough for recognition; float64 to compare with hmmlearn.
        batch_size: utterances per batch in training and scoring (memory vs. speed).
        end: ``final`` — a word ends by leaving its last state; ``any`` — hmmlearn's convention
            (sum over all states at the last frame).

    Learned attributes (after `fit`): ``units_``, ``means_`` (U·S, M, D), ``vars_``,
    ``log_weights_`` (U·S, M), ``log_stay_`` (U·S,), ``history_`` (mean log-likelihood per frame
    after each iteration).

    Example:
        >>> lex = Lexicon({"ab": "ab", "ba": "ba"}, silence=False)
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(-2, 1, (20, 2)), rng.normal(2, 1, (20, 2))
        >>> hmm = PhoneHMMs(n_mix=1, n_iter=3).fit([np.r_[a, b], np.r_[b, a]], ["ab", "ba"], lex)
        >>> hmm.predict([np.r_[b, a]], lex)
        ['ba']
    """

    def __init__(self, n_states: int = 3, n_mix: int = 2, n_iter: int = 8, *,
                 var_floor: float = 0.01, self_loop: float = 0.6, seed: int = 0,
                 dtype: torch.dtype = torch.float32, batch_size: int = 128, end: str = "final"):
        if n_states < 1 or n_mix < 1 or n_iter < 0:
            raise ValueError(f"need n_states >= 1, n_mix >= 1, n_iter >= 0; got {n_states}, "
                             f"{n_mix}, {n_iter}")
        if not 0 < self_loop < 1:
            raise ValueError(f"self_loop must be in (0, 1), got {self_loop}")
        self.n_states, self.n_mix, self.n_iter = n_states, n_mix, n_iter
        self.var_floor, self.self_loop, self.seed = var_floor, self_loop, seed
        if end not in ("final", "any"):
            raise ValueError(f"end must be 'final' or 'any', got {end!r}")
        self.dtype, self.batch_size, self.end = dtype, batch_size, end

    # ------------------------------------------------------------------ model structure
    def _check_fitted(self):
        if not hasattr(self, "means_"):
            raise RuntimeError("this PhoneHMMs is not fitted yet; call fit(features, words, "
                               "lexicon) first")

    def word_states(self, lexicon: Lexicon, words: Sequence[str]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Global state indices (K, N_max) of each word (padding: U·S) and their counts (K,).

        Raises:
            ValueError: a word uses a unit with no trained parameters (names word and unit).
        """
        self._check_fitted()
        S = self.n_states
        rows = []
        for w in words:
            idx = []
            for p in lexicon[w]:
                if p not in self.unit_index_:
                    raise ValueError(f"word {w!r} uses the phone {p!r}, which no training word "
                                     f"had, so it has no model; trained phones: "
                                     f"{' '.join(self.units_)}")
                u = self.unit_index_[p]
                idx.extend(range(u * S, u * S + S))
            rows.append(idx)
        n = torch.tensor([len(r) for r in rows])
        pad = len(self.units_) * S
        table = torch.full((len(rows), int(n.max())), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            table[i, : len(r)] = torch.tensor(r)
        return table, n

    def n_parameters(self, lexicon: Lexicon | None = None) -> int:
        """Free parameters: per state M·(2D) Gaussian + (M−1) weights + 1 self-loop.

        With ``lexicon``, only the units its words use are counted.
        """
        self._check_fitted()
        D = self.means_.shape[-1]
        per_state = self.n_mix * 2 * D + (self.n_mix - 1) + 1
        units = (len(self.units_) if lexicon is None
                 else len({p for w in lexicon for p in lexicon[w]}))
        return units * self.n_states * per_state

    def _transitions(self, table: torch.Tensor, counts: torch.Tensor):
        stay = torch.cat([self.log_stay_, self.log_stay_.new_zeros(1)])[table]
        nxt = torch.log1p(-torch.exp(stay))
        valid = torch.arange(table.shape[1]) < counts.unsqueeze(1)
        stay = torch.where(valid, stay, torch.full_like(stay, NEG_INF))
        nxt = torch.where(valid, nxt, torch.full_like(nxt, NEG_INF))
        return stay, nxt

    # ------------------------------------------------------------------ emissions
    def _frame_logb(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., U·S) state log-densities."""
        comp = diag_gmm_logprob(x.reshape(-1, x.shape[-1]), self.means_, self.vars_,
                                self.log_weights_)
        return _logsumexp(comp, -1).reshape(*x.shape[:-1], -1)

    def _gathered(self, x, table):
        """Per word-state component log-densities (B, T, N, M) for per-utterance tables (B, N)."""
        pad = len(self.units_) * self.n_states
        safe = table.clamp(max=pad - 1)
        mu, var = self.means_[safe], self.vars_[safe]                        # (B, N, M, D)
        prec = 1.0 / var
        D = x.shape[-1]
        const = -0.5 * (D * math.log(2 * math.pi) + torch.log(var).sum(-1)
                        + (mu * mu * prec).sum(-1))                          # (B, N, M)
        B, N, M, _ = mu.shape
        quad = torch.bmm(x * x, prec.reshape(B, N * M, D).transpose(1, 2))
        lin = torch.bmm(x, (mu * prec).reshape(B, N * M, D).transpose(1, 2))
        comp = (const.reshape(B, 1, N * M) - 0.5 * quad + lin).reshape(B, -1, N, M)
        comp = comp + self.log_weights_[safe].unsqueeze(1)
        return comp.masked_fill((table == pad)[:, None, :, None], NEG_INF)

    # ------------------------------------------------------------------ training
    def fit(self, features: Sequence, words: Sequence[str], lexicon: Lexicon) -> PhoneHMMs:
        """Train on utterances ``features[i]`` (frames, dims) of ``words[i]``; returns self.

        Raises:
            ValueError: lengths differ, a word is not in the lexicon, or an utterance has fewer
                frames than its word model has states.
        """
        if len(features) != len(words):
            raise ValueError(f"features and words must have the same length, got "
                             f"{len(features)} and {len(words)}")
        if len(lexicon) == 0:
            raise ValueError("the lexicon is empty")
        x_all, len_all = pad_features(features, dtype=self.dtype)
        used = sorted({p for w in set(words) for p in lexicon[w]})
        self.units_ = tuple(used)
        self.unit_index_ = {p: i for i, p in enumerate(used)}
        S, M, D = self.n_states, self.n_mix, x_all.shape[-1]
        G = len(used) * S
        vocab = sorted(set(words))
        self.means_ = torch.zeros(G, M, D, dtype=self.dtype)
        table_w, counts_w = self.word_states(lexicon, vocab)
        wi = torch.tensor([vocab.index(w) for w in words])
        table, counts = table_w[wi], counts_w[wi]
        short = torch.nonzero(len_all < counts).flatten()
        if short.numel():
            i = int(short[0])
            raise ValueError(f"utterance {i} ({words[i]!r}) has {int(len_all[i])} frames, fewer "
                             f"than the {int(counts[i])} states of its word model; use longer "
                             "audio, a shorter hop, or fewer states per phone")
        mask = torch.arange(x_all.shape[1]) < len_all.unsqueeze(1)            # (B, T)
        frames = x_all[mask]
        gmean, gvar = frames.mean(0), frames.var(0)
        self._floor = self.var_floor * gvar
        # Flat-start by uniform segmentation: frame t of an utterance with n states -> t·n/len.
        seg = (torch.arange(x_all.shape[1]).unsqueeze(0) * counts.unsqueeze(1)) // len_all.clamp(
            min=1).unsqueeze(1)
        state = table.gather(1, seg.clamp(max=table.shape[1] - 1))[mask]
        occ = torch.zeros(G + 1, dtype=self.dtype).index_add_(0, state, torch.ones_like(state,
                                                              dtype=self.dtype))[:G]
        s1 = torch.zeros(G + 1, D, dtype=self.dtype).index_add_(0, state, frames)[:G]
        s2 = torch.zeros(G + 1, D, dtype=self.dtype).index_add_(0, state, frames * frames)[:G]
        seen = occ > 0
        mu = torch.where(seen[:, None], s1 / occ.clamp(min=1)[:, None], gmean)
        var = torch.where(seen[:, None], s2 / occ.clamp(min=1)[:, None] - mu * mu, gvar)
        var = torch.maximum(var, self._floor)
        gen = torch.Generator().manual_seed(self.seed)
        jitter = torch.randn(G, M, D, generator=gen, dtype=self.dtype) * 0.3 if M > 1 else 0.0
        self.means_ = mu.unsqueeze(1) + jitter * var.sqrt().unsqueeze(1)
        self.vars_ = var.unsqueeze(1).expand(G, M, D).clone()
        self.log_weights_ = torch.full((G, M), -math.log(M), dtype=self.dtype)
        self.log_stay_ = torch.full((G,), math.log(self.self_loop), dtype=self.dtype)
        self.history_ = []
        for _ in range(self.n_iter):
            ll = self._em_step(x_all, len_all, table, counts)
            self.history_.append(ll)
        return self

    @torch.no_grad()
    def _em_step(self, x_all, len_all, table, counts) -> float:
        G, M = self.means_.shape[:2]
        D = x_all.shape[-1]
        occ = torch.zeros(G + 1, M, dtype=self.dtype)
        s1 = torch.zeros(G + 1, M, D, dtype=self.dtype)
        s2 = torch.zeros(G + 1, M, D, dtype=self.dtype)
        n_stay = torch.zeros(G + 1, dtype=self.dtype)
        n_out = torch.zeros(G + 1, dtype=self.dtype)
        total_ll, total_frames = 0.0, 0
        for lo in range(0, x_all.shape[0], self.batch_size):
            sl = slice(lo, lo + self.batch_size)
            lens, tab, cnt = len_all[sl], table[sl], counts[sl]
            T = int(lens.max())
            x = x_all[sl, :T]
            comp = self._gathered(x, tab)                                    # (B, T, N, M)
            log_b = _logsumexp(comp, -1)                                      # (B, T, N)
            stay, nxt = self._transitions(tab, cnt)                           # (B, N)
            ll, gamma, stays = posteriors_l2r(log_b, stay, nxt, lens, cnt - 1, end=self.end)
            post = torch.softmax(comp, -1).nan_to_num(0.0) * gamma.unsqueeze(-1)  # (B,T,N,M)
            flat = tab.reshape(-1)
            occ.index_add_(0, flat, post.sum(1).reshape(-1, M))
            s1.index_add_(0, flat, torch.einsum("btnm,btd->bnmd", post, x).reshape(-1, M, D))
            s2.index_add_(0, flat, torch.einsum("btnm,btd->bnmd", post, x * x).reshape(-1, M, D))
            # Transitions out of n: occupancy before the last frame, plus the exit at the end.
            inner = (torch.arange(T) < (lens - 1).unsqueeze(1))[..., None]
            out = (gamma * inner).sum(1)
            if self.end == "final":
                out.scatter_add_(1, (cnt - 1).unsqueeze(1), out.new_ones(len(cnt), 1))
            n_stay.index_add_(0, flat, stays.reshape(-1))
            n_out.index_add_(0, flat, out.reshape(-1))
            total_ll += float(ll.sum())
            total_frames += int(lens.sum())
        occ, s1, s2, n_stay, n_out = occ[:G], s1[:G], s2[:G], n_stay[:G], n_out[:G]
        ok = occ > 1e-3
        mu = torch.where(ok[..., None], s1 / occ.clamp(min=1e-10)[..., None], self.means_)
        var = torch.where(ok[..., None], s2 / occ.clamp(min=1e-10)[..., None] - mu * mu,
                          self.vars_)
        self.means_ = mu
        self.vars_ = torch.maximum(var, self._floor)
        w = occ / occ.sum(-1, keepdim=True).clamp(min=1e-10)
        state_ok = occ.sum(-1) > 1e-3
        w = torch.where(state_ok[:, None], (w + 1e-3) / (1 + M * 1e-3), self.log_weights_.exp())
        self.log_weights_ = torch.log(w)
        a = torch.where(n_out > 1e-3, n_stay / n_out.clamp(min=1e-10), self.log_stay_.exp())
        # With end='final' a self-loop of 1 would trap the path; hmmlearn's 'any' allows it.
        self.log_stay_ = torch.log(a.clamp(1e-3, 1.0 if self.end == "any" else 1 - 1e-3))
        return total_ll / max(total_frames, 1)

    # ------------------------------------------------------------------ gradient training
    def fit_gradient(self, features: Sequence, words: Sequence[str], lexicon: Lexicon, *,
                     epochs: int = 30, lr: float = 0.05) -> PhoneHMMs:
        """Train by gradient ascent on the log-likelihood instead of Baum-Welch; returns self.

        The same flat start as `fit` (uniform segmentation), then Adam on the mean
        log-likelihood per frame of every training utterance under its own word model, computed
        by a differentiable log-space forward (autograd through the recursion). Parameters are
        unconstrained: means, log-variances (floored as in `fit`), mixture logits and
        self-loop logits. Appends the mean log-likelihood per frame before each step to
        ``history_``. Slower than Baum-Welch per step; the point is that any differentiable
        emission model could replace the Gaussians.

        Raises:
            ValueError: as `fit`, or ``epochs`` < 1 or ``lr`` <= 0.

        Example:
            >>> lex = Lexicon({"ab": "ab", "ba": "ba"}, silence=False)
            >>> rng = np.random.default_rng(0)
            >>> a, b = rng.normal(-2, 1, (20, 2)), rng.normal(2, 1, (20, 2))
            >>> hmm = PhoneHMMs(n_mix=1).fit_gradient([np.r_[a, b], np.r_[b, a]],
            ...                                        ["ab", "ba"], lex, epochs=5)
            >>> hmm.predict([np.r_[b, a]], lex)
            ['ba']
        """
        if epochs < 1 or not lr > 0:
            raise ValueError(f"need epochs >= 1 and lr > 0, got epochs={epochs}, lr={lr}")
        n_iter, self.n_iter = self.n_iter, 0
        try:
            self.fit(features, words, lexicon)                 # flat start only
        finally:
            self.n_iter = n_iter
        x_all, len_all = pad_features(features, dtype=self.dtype)
        vocab = sorted(set(words))
        table_w, counts_w = self.word_states(lexicon, vocab)
        wi = torch.tensor([vocab.index(w) for w in words])
        table, counts = table_w[wi], counts_w[wi]
        means = torch.nn.Parameter(self.means_.clone())
        log_var = torch.nn.Parameter(self.vars_.log())
        logits = torch.nn.Parameter(self.log_weights_.clone())
        stay_logit = torch.nn.Parameter(torch.logit(self.log_stay_.exp()))
        opt = torch.optim.Adam([means, log_var, logits, stay_logit], lr=lr)
        frames = float(len_all.sum())
        for _ in range(epochs):
            self.means_ = means
            self.vars_ = torch.maximum(log_var.exp(), self._floor)
            self.log_weights_ = torch.log_softmax(logits, -1)
            self.log_stay_ = torch.nn.functional.logsigmoid(stay_logit)
            opt.zero_grad()
            total = 0.0
            for lo in range(0, x_all.shape[0], self.batch_size):
                sl = slice(lo, lo + self.batch_size)
                lens, tab, cnt = len_all[sl], table[sl], counts[sl]
                comp = self._gathered(x_all[sl, : int(lens.max())], tab)       # (B, T, N, M)
                stay, nxt = self._transitions(tab, cnt)
                ll = _forward_differentiable(torch.logsumexp(comp, -1), stay, nxt, lens,
                                             cnt - 1, self.end)
                loss = -ll.sum() / frames
                loss.backward(retain_graph=lo + self.batch_size < x_all.shape[0])
                total += float(ll.detach().sum())
            self.history_.append(total / frames)
            opt.step()
        with torch.no_grad():
            self.means_ = means.detach().clone()
            self.vars_ = torch.maximum(log_var.exp(), self._floor).detach()
            self.log_weights_ = torch.log_softmax(logits, -1).detach()
            self.log_stay_ = torch.nn.functional.logsigmoid(stay_logit).detach()
        return self

    # ------------------------------------------------------------------ recognition
    @torch.no_grad()
    def score(self, features: Sequence, lexicon: Lexicon, words: Sequence[str] | None = None,
              *, algorithm: str = "forward") -> np.ndarray:
        """Log-likelihood of every utterance under every word model: (B, K) float64.

        ``words`` defaults to the whole lexicon. Models with more states than an utterance has
        frames score −∞. ``algorithm="viterbi"`` scores the best path instead of summing over
        all paths (no exp/log per step: several times faster, the usual choice for decoding).

        Raises:
            ValueError: a word uses an untrained phone; an utterance is shorter than every
                candidate model; the feature dimension differs from training.
        """
        self._check_fitted()
        if algorithm not in ("forward", "viterbi"):
            raise ValueError(f"algorithm must be 'forward' or 'viterbi', got {algorithm!r}")
        recursion = forward_l2r if algorithm == "forward" else viterbi_l2r
        words = list(lexicon) if words is None else list(words)
        if not words:
            raise ValueError("words is empty: give at least one candidate word")
        table, counts = self.word_states(lexicon, words)
        stay, nxt = self._transitions(table, counts)
        x_all, len_all = pad_features(features, dtype=self.dtype)
        if x_all.shape[-1] != self.means_.shape[-1]:
            raise ValueError(f"features have {x_all.shape[-1]} dimensions but the model was "
                             f"trained on {self.means_.shape[-1]}")
        too_short = len_all < counts.min()
        if too_short.any():
            i = int(torch.nonzero(too_short)[0])
            raise ValueError(f"utterance {i} has {int(len_all[i])} frames, fewer than the "
                             f"{int(counts.min())} states of the shortest word model: too short "
                             "to be any of the words")
        out = []
        K, N = table.shape
        # Sort by length so that chunks are nearly unragged; keep each (B, T, K, N) emission
        # block near 8M elements.
        order = torch.argsort(len_all, descending=True, stable=True)
        safe = table.clamp(max=self.means_.shape[0] - 1).flatten()  # padding: never reached
        identity = safe.numel() == self.means_.shape[0] and bool(
            torch.equal(safe, torch.arange(safe.numel())))  # e.g. unshared models in order
        if algorithm == "forward":
            # Streaming log-space forward: emissions a few frames at a time, no (B, T, K, N) block.
            step = max(1, 200_000 // (K * N))
            for lo in range(0, x_all.shape[0], step):
                idx = order[lo: lo + step]
                lens = len_all[idx]
                in_place = bool(torch.equal(idx, torch.arange(lo, lo + len(idx))))
                x = x_all[lo: lo + len(idx)] if in_place else x_all[idx]     # no copy if sorted
                out.append(self._forward_scores(x[:, : int(lens.max())], lens, safe, identity,
                                                stay, nxt, counts - 1))
            return torch.cat(out)[torch.argsort(order)].numpy()
        step = max(1, 8_000_000 // max(1, int(len_all.max()) * K * N))
        for lo in range(0, x_all.shape[0], step):
            idx = order[lo: lo + step]
            lens = len_all[idx]
            x = x_all[idx, : int(lens.max())]
            # Time-major, so that forward/Viterbi read each frame contiguously.
            frame = self._frame_logb(x.transpose(0, 1))                     # (T, B, G)
            if not identity:                                                 # shared states
                frame = frame.index_select(2, safe)
            logb = frame.view(*frame.shape[:2], K, N).transpose(0, 1)        # (B, T, K, N)
            out.append(recursion(logb, stay, nxt, lens, counts - 1, end=self.end))
        out = torch.cat(out)[torch.argsort(order)]
        return out.double().numpy()

    def _forward_scores(self, x, lens, safe, identity, log_stay, log_next, last):
        """Forward log-likelihoods (B, K) float64 of utterances sorted by decreasing length.

        `forward_l2r`'s log-space recursion, streamed over time: the emissions of a few frames
        at a time come from one matrix product of [x², x] with [−½σ⁻², μσ⁻²] (the expanded
        quadratic form, constants added), and every step works in place in preallocated
        buffers: no (B, T, K, N) block and no allocation per frame (on small machines a fresh
        allocation costs more than the arithmetic). Since the utterances are sorted, the live
        ones at frame t are a prefix of the batch. (A scaled forward in probability space was
        tried and rejected: renormalizing per frame flushes states more than ~700 nats behind
        the best one, and with ``end="final"`` such a path can come back and dominate.)
        """
        B, T, D = x.shape
        G, M = self.means_.shape[:2]
        K, N = log_stay.shape
        dt = x.dtype
        prec = 1.0 / self.vars_
        weights = torch.cat([(-0.5 * prec).reshape(G * M, D),
                             (self.means_ * prec).reshape(G * M, D)], 1).T.contiguous()
        const = (-0.5 * (D * math.log(2 * math.pi) + torch.log(self.vars_).sum(-1)
                         + (self.means_ * self.means_ * prec).sum(-1))
                 + self.log_weights_).reshape(1, G * M)
        stay, nxt = _l2r_transitions(log_stay, log_next, last)
        xt = x.transpose(0, 1)                                               # (T, B, D)
        chunk = max(1, min(T, 400_000 // (B * max(G * M, K * N))))
        feats = torch.empty(chunk, B, 2 * D, dtype=dt)
        comp = torch.empty(chunk * B, G * M, dtype=dt)
        if M > 1:
            comp_max = torch.empty(chunk * B, G, 1, dtype=dt)
            state = torch.empty(chunk * B, G, dtype=dt)
        picked = torch.empty(chunk * B, K * N, dtype=dt) if not identity else None
        alpha = torch.full((B, K, N), _NEG, dtype=dt)
        new = torch.full((B, K, N), _NEG, dtype=dt)
        adv = torch.full((B, K, N + 1), _NEG, dtype=dt)     # adv[..., :-1]: into each state
        kept = torch.empty(B, K, N, dtype=dt)
        gap = torch.empty(B, K, N, dtype=dt)
        n_live = [int((lens > t).sum()) for t in range(T)]
        for t0 in range(0, T, chunk):
            c = min(chunk, T - t0)
            f, e = feats[:c], comp[: c * B]
            torch.mul(xt[t0: t0 + c], xt[t0: t0 + c], out=f[..., :D])
            f[..., D:].copy_(xt[t0: t0 + c])
            torch.addmm(const, f.view(c * B, 2 * D), weights, out=e)
            if M > 1:                                       # log Σ_m over the mixture
                e3 = e.view(c * B, G, M)
                cm = comp_max[: c * B]
                torch.amax(e3, -1, keepdim=True, out=cm)
                cm.clamp_min_(_NEG)
                e3.sub_(cm).exp_()
                st = state[: c * B]
                torch.sum(e3, -1, out=st)
                e = st.log_().add_(cm.squeeze(-1))
            if not identity:                                # shared states -> word states
                torch.index_select(e, 1, safe, out=picked[: c * B])
                e = picked[: c * B]
            lb = e.clamp_min_(_NEG).view(c, B, K, N)
            for i in range(c):
                t, n = t0 + i, n_live[t0 + i]
                o = new[:n]
                if t == 0:
                    o[..., 0] = lb[i, :n, :, 0]
                else:
                    a, mv, kp, g = alpha[:n], adv[:n, :, :-1], kept[:n], gap[:n]
                    torch.add(a, nxt, out=adv[:n, :, 1:])
                    torch.add(a, stay, out=kp)
                    torch.sub(kp, mv, out=g)
                    # log(1 + e^−|Δ|): log of a number in [1, 2] is much cheaper than log1p
                    # here, and the rounding of 1 + tiny is below 1e-16 nats.
                    g.abs_().clamp_(max=60.0).neg_().exp_().add_(1.0).log_()
                    torch.maximum(kp, mv, out=o)
                    o.add_(g).add_(lb[i, :n])
                if n < B:                                   # finished utterances keep their α
                    new[n:] = alpha[n:]
                alpha, new = new, alpha
        ll = torch.logsumexp(alpha + _end_vector(log_next, last, N, self.end), dim=-1)
        return ll.masked_fill(ll < _NEG / 2, NEG_INF).to(torch.float64)

    def predict(self, features: Sequence, lexicon: Lexicon, words: Sequence[str] | None = None,
                *, algorithm: str = "forward") -> list[str]:
        """The best-scoring word for each utterance (see `score`)."""
        words = list(lexicon) if words is None else list(words)
        scores = self.score(features, lexicon, words, algorithm=algorithm)
        return [words[i] for i in scores.argmax(1)]
