"""A request as the reference scheduler and its policies see it: identity, the numbers that
order it, and its state (status, tokens computed and generated, blocks held)."""

from __future__ import annotations

from dataclasses import dataclass, field

RequestId = str | int

WAITING, RUNNING, SWAPPED, FINISHED, ABORTED = "waiting", "running", "swapped", "finished", "aborted"


@dataclass(eq=False)
class Request:
    request_id: RequestId
    seq: int                      # order of add_request: the last tie-breaker
    arrival_time: float
    prompt_tokens: int
    max_output_tokens: int        # effective: capped so prompt + output fits the cache
    priority: int = 0
    predicted_output_tokens: int | None = None
    true_output_tokens: int | None = None
    status: str = WAITING
    num_output_tokens: int = 0
    num_computed_tokens: int = 0
    num_preemptions: int = 0
    block_table: list[int] = field(default_factory=list)
    cpu_blocks: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        """Tokens whose KV the request needs: prompt plus generated."""
        return self.prompt_tokens + self.num_output_tokens

    @property
    def predicted_remaining(self) -> int:
        pred = self.max_output_tokens if self.predicted_output_tokens is None else self.predicted_output_tokens
        return max(pred - self.num_output_tokens, 0)

    @property
    def true_remaining(self) -> int:
        true = self.max_output_tokens if self.true_output_tokens is None else self.true_output_tokens
        return max(true - self.num_output_tokens, 0)
