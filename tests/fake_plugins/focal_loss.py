from hfplug import hookimpl


@hookimpl
def register_losses(register):
    register("focal", lambda **kw: lambda outputs, labels, num_items_in_batch=None: 0)
