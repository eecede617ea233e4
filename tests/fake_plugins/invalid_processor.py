from hfplug import hookimpl


@hookimpl
def register_logits_processors(register):
    register("not_a_processor", dict)
