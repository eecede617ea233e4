from hfplug import hookimpl


@hookimpl
def register_callbacks(register):
    register("not_a_callback", object)
