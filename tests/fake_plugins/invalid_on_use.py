from hfplug import hookimpl


@hookimpl
def register_attention_backends(register):
    from transformers.masking_utils import sdpa_mask

    register("bad_on_use", lambda *a, **k: None, sdpa_mask, on_use="not callable")
