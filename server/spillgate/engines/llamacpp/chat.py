"""Chat messages → prompt text, with the GGUF's own `tokenizer.chat_template` (Jinja2).

Any GGUF carrying a template works unchanged; one without a template gets ChatML, the format
most instruction-tuned small models use. Rendering goes through llama-cpp-python's
`Jinja2ChatFormatter` (sandboxed environment, HF-compatible `tojson` and `raise_exception`).
"""

from __future__ import annotations

from typing import Any

import jinja2
import jinja2.meta
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from spillgate.errors import InvalidRequest

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplate:
    """Renders OpenAI messages (text content) into one prompt ending in the assistant turn."""

    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        self.source = template or CHATML
        self.bos_token = bos_token
        self._formatter = Jinja2ChatFormatter(
            template=self.source, eos_token=eos_token, bos_token=bos_token,
            add_generation_prompt=True)

    @property
    def supports_tools(self) -> bool:
        """Whether the template reads a `tools` variable (renders tool definitions)."""
        try:
            # Parsed only, never rendered here: autoescape plays no part.
            ast = jinja2.Environment(autoescape=True).parse(self.source)
            names = jinja2.meta.find_undeclared_variables(ast)
        except jinja2.TemplateError:
            return False
        return "tools" in names

    def render(self, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt; a template's own refusal (e.g. roles must alternate) is a 400."""
        try:
            result = self._formatter(messages=messages, tools=tools)  # type: ignore[arg-type]
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise InvalidRequest(f"the model's chat template rejected the messages: {exc}",
                                 param="messages") from None
        prompt: str = result.prompt
        return prompt
