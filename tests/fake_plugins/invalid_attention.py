from hfplug import hookimpl


@hookimpl
def register_attention_backends(register):
    register("no_mask", lambda *a, **k: None, None)
