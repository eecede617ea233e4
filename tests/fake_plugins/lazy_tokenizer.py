from hfplug import hookimpl


@hookimpl
def register_tokenizers(register):
    register("lazy_bert", "fake_lazy_tokenization:LazyBertTokenizer")
    register("lazy_missing", "fake_lazy_tokenization:NoSuchTokenizer")
    register("lazy_not_a_tokenizer", "fake_lazy_tokenization:NotATokenizer")
