"""Requests → scheduler jobs: model-name check, prompt building, context-window check."""

from __future__ import annotations

from dataclasses import dataclass

from spillgate.engines.llamacpp.bodies import UNSUPPORTED, ChatBody, CompletionBody
from spillgate.engines.llamacpp.chat import ChatTemplate
from spillgate.engines.llamacpp.model import LlamaModel
from spillgate.engines.llamacpp.scheduler import Job
from spillgate.errors import InvalidRequest, ModelNotFound


@dataclass(frozen=True, slots=True)
class Engine:
    """What the routes need: the served name, the tokenizer and template, the window."""

    served_name: str
    model: LlamaModel
    template: ChatTemplate
    n_ctx: int

    def check_model(self, name: str) -> None:
        if name != self.served_name:
            raise ModelNotFound(f"model `{name}` does not exist; this engine serves "
                                f"`{self.served_name}`", param="model")

    def unsupported(self) -> frozenset[str]:
        """Request features this engine cannot serve, declared on /health for the gateway."""
        return UNSUPPORTED if self.template.supports_tools else UNSUPPORTED | {"tools"}

    def calls_tools(self, body: ChatBody) -> bool:
        """The answer is read back into tool_calls (tools offered to a template taking them)."""
        return body.uses_tools() and self.template.supports_tools

    def chat_job(self, body: ChatBody) -> Job:
        self.check_model(body.model)
        body.check_supported()
        if body.tools and "tools" in self.unsupported():
            raise InvalidRequest("`tools` is not supported by this engine (its model's chat "
                                 "template takes no tools)", param="tools",
                                 code="unsupported_parameter")
        prompt = self.template.render(body.template_messages(),
                                      body.tools if body.uses_tools() else None)
        # The template writes BOS itself when the model wants one; add it only if it did not.
        add_bos = self.model.adds_bos() and not prompt.startswith(self.template.bos_token)
        tokens = self.model.tokenize(prompt, add_special=add_bos, parse_special=True)
        return self._job(tokens, body.token_budget(), body, "messages")

    def completion_job(self, body: CompletionBody) -> Job:
        self.check_model(body.model)
        body.check_supported()
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            tokens = [int(t) for t in prompt]
            self._check_token_ids(tokens)
        else:
            text = prompt if isinstance(prompt, str) else str(prompt[0])
            tokens = self.model.tokenize(text, add_special=True, parse_special=True)
        return self._job(tokens, body.token_budget(), body, "prompt")

    def _check_token_ids(self, tokens: list[int]) -> None:
        n_vocab = self.model.n_vocab()
        if any(t < 0 or t >= n_vocab for t in tokens):
            raise InvalidRequest(f"token ids must be in [0, {n_vocab})", param="prompt")

    def _job(self, tokens: list[int], budget: int | None, body: ChatBody | CompletionBody,
             param: str) -> Job:
        if not tokens:
            raise InvalidRequest("the prompt is empty", param=param)
        if len(tokens) >= self.n_ctx:
            raise InvalidRequest(
                f"this model's maximum context length is {self.n_ctx} tokens, but the prompt "
                f"has {len(tokens)} tokens", param=param, code="context_length_exceeded")
        room = self.n_ctx - len(tokens)
        sampling = body.sampling()
        if sampling.grammar is not None and not self.model.grammar_ok(sampling.grammar):
            raise InvalidRequest("llama.cpp cannot use the grammar derived from "
                                 "response_format", param="response_format")
        return Job(prompt=tokens, max_tokens=min(budget or room, room),
                   sampling=sampling, stops=body.stops(), priority=body.priority,
                   logprobs=body.logprobs_top())
