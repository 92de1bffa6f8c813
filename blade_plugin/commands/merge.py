"""`blade-bpo merge`: fold a LoRA adapter into its base model (for the vllm small backend)."""

from __future__ import annotations

import click


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Base HF model directory the adapter was trained on (e.g. saves/dp).")
@click.option("--adapter", "adapter_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="LoRA adapter directory (e.g. saves/kit from the KIT recipe).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="New directory for the merged model; must not exist yet.")
@click.option("--template", default=None,
              help="LLaMA-Factory chat template (default: blade_qwen for Qwen models, else blade_chatml).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Saved dtype; auto is LLaMA-Factory's choice (bfloat16 for a float32 model).")
@click.option("--trust-remote-code", is_flag=True, envvar="BLADE_TRUST_REMOTE_CODE", show_envvar=True,
              help="Let the model directory run its own Python code on load (transformers' trust_remote_code). Off by default: a downloaded model could run anything; the embedded SmolLM2 and Qwen2.5 need no remote code.")
def merge(model_dir, adapter_dir, out_dir, template, dtype, trust_remote_code) -> None:
    """Merge ADAPTER into MODEL as a plain HF model in OUT (LLaMA-Factory's export), ready for `vllm serve`."""
    from ..small_lm.merge import merge_adapter
    from ..small_lm.loading import guess_template

    out = merge_adapter(model_dir, adapter_dir, out_dir, template=guess_template(model_dir, template), dtype=dtype,
                        trust_remote_code=trust_remote_code)
    click.echo(f"merged model: {out}\nserve it with:  vllm serve {out} --enable-prompt-embeds\n"
               f"then:  blade-bpo optimize --small-backend vllm --small-model {out} --small-backend-url "
               f"http://HOST:8000 ...")
