"""g2pM's polyphone reader (Park & Lee, Interspeech 2020; the `g2pM` package, Apache-2.0), run with numpy.

g2pM is a one-layer bidirectional LSTM over characters (32 units each way) and two dense layers,
trained on the CPP corpus's train split. Its weights ship inside the `g2pM` wheel; this module
reads them and runs the network itself, once per run of text for all the positions asked about,
and gives each asked position's probability of each reading the caller allows. Its answers are
one input of the polyphone context model.
"""

from __future__ import annotations

import pickle
from importlib import resources

import numpy as np

_BOS, _EOS, _UNKNOWN = "시", "끝", "<UNK>"  # g2pM's own sentence marks
HIDDEN = 32  # LSTM units each way


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class NeuralReader:
    """g2pM's network: characters -> a distribution over its 876 readings at each position."""

    def __init__(self) -> None:
        package = resources.files("g2pM")

        def unpickle(name: str):
            with package.joinpath(name).open("rb") as handle:
                return pickle.load(handle)  # the installed package's own files

        state = unpickle("np_ckpt.pkl")
        self._char_ids: dict[str, int] = unpickle("char2idx.pkl")
        self.class_ids: dict[str, int] = unpickle("class2idx.pkl")
        self._embeddings = state["embedding.weight"]
        # Both directions side by side: input weights (2, 64, 128), recurrent (2, 32, 128), biases (2, 128);
        # gates in PyTorch's order i, f, g, o. The g gate's columns are doubled so that one sigmoid
        # serves all four gates: tanh(x) = 2 sigmoid(2x) - 1.
        doubled = np.ones(4 * HIDDEN, np.float32)
        doubled[2 * HIDDEN : 3 * HIDDEN] = 2.0
        self._w_input = np.stack([state["lstm.weight_ih_l0"].T, state["lstm.weight_ih_l0_reverse"].T]) * doubled
        self._w_hidden = np.stack([state["lstm.weight_hh_l0"].T, state["lstm.weight_hh_l0_reverse"].T]) * doubled
        forward = state["lstm.bias_ih_l0"] + state["lstm.bias_hh_l0"]
        backward = state["lstm.bias_ih_l0_reverse"] + state["lstm.bias_hh_l0_reverse"]
        self._bias = np.stack([forward, backward]) * doubled
        self._dense = (
            state["logit_layer.0.weight"].T,
            state["logit_layer.0.bias"],
            state["logit_layer.2.weight"].T,
            state["logit_layer.2.bias"],
        )

    def _hidden(self, text: str) -> np.ndarray:
        """Both directions' LSTM states at each character of `text`: (len(text), 64)."""
        unknown = self._char_ids[_UNKNOWN]
        ids = [self._char_ids[_BOS]] + [self._char_ids.get(ch, unknown) for ch in text] + [self._char_ids[_EOS]]
        embedded = self._embeddings[ids]
        steps = len(ids)
        # Inputs projected at once; the backward direction reads the sequence reversed.
        projected = np.stack([embedded @ self._w_input[0], embedded[::-1] @ self._w_input[1]]) + self._bias[:, None, :]
        h = np.zeros((2, 1, HIDDEN), np.float32)
        c = np.zeros((2, 1, HIDDEN), np.float32)
        states = np.empty((2, steps, HIDDEN), np.float32)
        for t in range(steps):
            gates = _sigmoid(projected[:, t : t + 1, :] + h @ self._w_hidden)
            c = gates[..., HIDDEN : 2 * HIDDEN] * c + gates[..., :HIDDEN] * (2.0 * gates[..., 2 * HIDDEN : 3 * HIDDEN] - 1.0)
            h = gates[..., 3 * HIDDEN :] * np.tanh(c)
            states[:, t] = h[:, 0]
        return np.concatenate([states[0], states[1][::-1]], axis=1)[1:-1]

    def distributions(self, text: str, asked: dict[int, tuple[str, ...]]) -> dict[int, dict[str, float]]:
        """{position: allowed readings} -> {position: {reading: probability among the allowed readings g2pM knows}}."""
        if not asked:
            return {}
        hidden = self._hidden(text)[list(asked)]
        w0, b0, w1, b1 = self._dense
        logits = np.maximum(hidden @ w0 + b0, 0.0) @ w1 + b1
        out = {}
        for row, (position, readings) in zip(logits, asked.items(), strict=True):
            known = [reading for reading in readings if reading in self.class_ids]
            if not known:
                continue
            scores = row[[self.class_ids[reading] for reading in known]]
            probabilities = np.exp(scores - scores.max())
            probabilities /= probabilities.sum()
            out[position] = dict(zip(known, probabilities.tolist(), strict=True))
        return out
