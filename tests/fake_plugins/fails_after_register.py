from hfplug import hookimpl


@hookimpl
def register_callbacks(register):
    from transformers import TrainerCallback

    register("half_callback", TrainerCallback)


@hookimpl
def register_losses(register):
    register("half_loss", lambda **kw: None)
    raise RuntimeError("boom after register")
