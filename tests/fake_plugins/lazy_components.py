from hfplug import hookimpl

MODULE = "fake_lazy_components"


@hookimpl
def register_callbacks(register):
    register("lazy_counting", f"{MODULE}:CountingCallback")
    register("lazy_not_a_callback", f"{MODULE}:NotAComponent")


@hookimpl
def register_losses(register):
    register("lazy_scaled_ce", f"{MODULE}:scaled_ce")


@hookimpl
def register_attention_backends(register):
    register(
        "lazy_sdpa",
        f"{MODULE}:counted_sdpa",
        "transformers.masking_utils:sdpa_mask",
        on_use=f"{MODULE}:record_use",
    )
    register("lazy_missing_mask", f"{MODULE}:counted_sdpa", f"{MODULE}:no_such_mask")


@hookimpl
def register_logits_processors(register):
    register("lazy_ban_token", f"{MODULE}:BanToken")
    register("lazy_stop_at", f"{MODULE}:StopAtLength")


@hookimpl
def register_tokenizers(register):
    register("lazy_shouting", f"{MODULE}:ShoutingTokenizer")
