"""llama.cpp's C API, through llama-cpp-python's low-level bindings: one model, one context
holding several sequences, batches with a row per token, a sampler chain per sequence.

The `Llama` class decodes one sequence per context, so continuous batching needs the C API
itself; this module keeps every ctypes detail in one place and gives the scheduler typed
calls in its own terms.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from astra_tune.errors import ModelError
from astra_tune.progress import quiet_llama_logs
from astra_tune.serve.sampling import Sampling

RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed
PENALTY_LAST_N = 64  # tokens the repeat penalty looks back on (llama.cpp's default)


class NativeModel:
    """A GGUF (and optional LoRA adapter) in a context of `n_seq` sequences that share one
    unified KV cache of `n_seq * n_ctx` cells, so no sequence ever waits for room."""

    def __init__(
        self,
        gguf: Path,
        adapter: Path | None,
        *,
        n_ctx: int,
        n_seq: int,
        n_batch: int,
        n_threads: int,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals as internals

        self._lib = llama_cpp
        self.n_ctx = n_ctx
        self.n_seq = n_seq
        self.n_batch = n_batch
        with quiet_llama_logs():
            try:
                self.model = internals.LlamaModel(
                    path_model=str(gguf),
                    params=llama_cpp.llama_model_default_params(),
                    verbose=False,
                )
            except ValueError as exc:
                raise ModelError(f"llama.cpp cannot load {gguf.name}: {exc}") from exc
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = n_ctx * n_seq
            params.n_batch = n_batch
            params.n_ubatch = n_batch
            params.n_seq_max = n_seq
            params.kv_unified = True  # one pool of cells: a long chat can use what idle slots lack
            params.n_threads = n_threads
            params.n_threads_batch = n_threads
            try:
                self.context = internals.LlamaContext(
                    model=self.model, params=params, verbose=False
                )
            except ValueError as exc:
                self.model.close()
                raise ModelError(
                    f"llama.cpp cannot make a context of {n_seq} x {n_ctx} tokens for "
                    f"{gguf.name}: {exc}",
                    fix="lower --parallel or --n-ctx",
                ) from exc
            self._adapter = self._load_adapter(adapter) if adapter is not None else None
        self.vocab_size = self.model.n_vocab()
        self._piece = ctypes.create_string_buffer(64)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._rows = 0

    def _load_adapter(self, adapter: Path) -> object:
        lib = self._lib
        handle = lib.llama_adapter_lora_init(self.model.model, str(adapter).encode("utf-8"))
        if not handle:
            raise ModelError(
                f"llama.cpp cannot load the LoRA adapter {adapter}", where=str(adapter)
            )
        adapters = (lib.llama_adapter_lora_p_ctypes * 1)(handle)
        scales = (ctypes.c_float * 1)(1.0)
        if lib.llama_set_adapters_lora(self.context.ctx, adapters, 1, scales) != 0:
            raise ModelError(
                f"llama.cpp cannot apply the LoRA adapter {adapter}", where=str(adapter)
            )
        return handle

    # -- text ------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return list(self.model.tokenize(text.encode("utf-8"), add_bos, True))

    def piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (special tokens as nothing)."""
        size = self._lib.llama_token_to_piece(self.model.vocab, token, self._piece, 64, 0, False)
        if size < 0:  # longer than the buffer: llama.cpp says by how much
            buffer = ctypes.create_string_buffer(-size)
            size = self._lib.llama_token_to_piece(self.model.vocab, token, buffer, -size, 0, False)
            return buffer.raw[:size]
        return self._piece.raw[:size]

    def is_end(self, token: int) -> bool:
        """End of generation: EOS, end of turn and the like."""
        return bool(self._lib.llama_vocab_is_eog(self.model.vocab, token))

    # -- the KV cache ------------------------------------------------------------------------

    def forget(self, seq: int, start: int = 0) -> None:
        """Free the cells of sequence `seq` from position `start` on."""
        self._lib.llama_memory_seq_rm(self.context.memory, seq, start, -1)

    # -- batches ---------------------------------------------------------------------------

    def clear_batch(self) -> None:
        self._rows = 0

    @property
    def rows(self) -> int:
        return self._rows

    def add(self, token: int, position: int, seq: int, logits: bool) -> int:
        """Append one token of `seq` at `position`; its row index in the batch."""
        row = self._rows
        batch = self._batch
        batch.token[row] = token
        batch.pos[row] = position
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = seq
        batch.logits[row] = logits
        self._rows += 1
        return row

    def decode(self) -> None:
        """Run the batch through the model (the GIL is released inside llama.cpp)."""
        self._batch.n_tokens = self._rows
        code = self._lib.llama_decode(self.context.ctx, self._batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code} for a batch of {self._rows} rows")

    # -- sampling --------------------------------------------------------------------------

    def sampler(self, sampling: Sampling) -> Sampler:
        return Sampler(self, sampling)

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._adapter is not None:
            self._lib.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        self.context.close()
        self.model.close()


class Sampler:
    """One sequence's sampler chain, in llama.cpp's server order: logit bias, repeat
    penalty, grammar (JSON mode), then top-k, top-p, min-p, temperature and the draw."""

    def __init__(self, native: NativeModel, sampling: Sampling) -> None:
        from llama_cpp import _internals as internals

        self._native = native
        chain = internals.LlamaSampler()
        if sampling.logit_bias:
            chain.add_logit_bias(native.vocab_size, sampling.logit_bias)
        if sampling.repeat_penalty != 1.0:
            chain.add_penalties(
                native.vocab_size, PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0
            )
        if sampling.json_mode:
            from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

            chain.add_grammar(native.model, LlamaGrammar.from_string(JSON_GBNF, verbose=False))
        if sampling.temperature <= 0:
            chain.add_greedy()
        else:
            chain.add_top_k(sampling.top_k)
            chain.add_top_p(sampling.top_p, 1)
            chain.add_min_p(sampling.min_p, 1)
            chain.add_temp(sampling.temperature)
            chain.add_dist(sampling.seed if sampling.seed is not None else RANDOM_SEED)
        self._chain = chain

    def sample(self, row: int) -> int:
        """Draw the next token from batch row `row` (and let the chain remember it)."""
        return int(self._chain.sample(self._native.context, row))

    def close(self) -> None:
        self._chain.close()
