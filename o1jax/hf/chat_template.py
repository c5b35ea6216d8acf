"""Renders Hugging Face chat templates exactly the way transformers does, without transformers.

The Jinja environment matches `transformers.utils.chat_template_utils`: sandboxed,
`trim_blocks` and `lstrip_blocks` (templates are written assuming them, and a newline out of
place changes the tokens the model sees), loop controls, a `tojson` that does not escape HTML,
`raise_exception` and `strftime_now`; the special tokens (`bos_token`, `eos_token`, ...) are
template variables.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import datetime
from typing import Any

from o1jax.hf._deps import require

TEMPLATE_FILE = "chat_template.jinja"


def find_chat_template(tokenizer_dir: str, tokenizer_config: dict[str, Any]) -> str | None:
  """The default template: chat_template.jinja wins over tokenizer_config.json (as in
  transformers 5, which writes the former); a named list in the config yields 'default'."""
  path = os.path.join(tokenizer_dir, TEMPLATE_FILE)
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      return f.read()
  template = tokenizer_config.get("chat_template")
  if isinstance(template, list):
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
    template = named.get("default")
  return template if isinstance(template, str) and template else None


@functools.lru_cache(maxsize=16)
def compile_template(source: str):
  jinja2 = require("jinja2")
  sandbox = require("jinja2.sandbox")
  ext = require("jinja2.ext")

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters; transformers' does not, so neither do we.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  def strftime_now(fmt):
    return datetime.now().strftime(fmt)

  class Generation(ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks in
    transformers; for rendering it is a no-op, but the template must still parse."""
    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
      return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
      return caller()

  env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                              extensions=[Generation, ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = strftime_now
  return env.from_string(source)


def render(source: str, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
           tools: list[dict] | None = None, documents: list[dict] | None = None,
           special_tokens: dict[str, str] | None = None, **kwargs) -> str:
  """The rendered conversation text (not tokenized); kwargs override the special tokens.

  `tools` and `documents` are always passed, as None when absent, because templates test
  `tools is not none` and transformers defines them.
  """
  variables = {**(special_tokens or {}), **kwargs}
  return compile_template(source).render(messages=messages, tools=tools, documents=documents,
                                         add_generation_prompt=add_generation_prompt,
                                         **variables)
