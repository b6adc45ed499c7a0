"""`--rewrite`: regenerate the expected output of the transcripts (same as CAIRN_REWRITE=1)."""


def pytest_addoption(parser):
    parser.addoption("--rewrite", action="store_true", default=False,
                     help="rewrite transcript expectations with the actual output")
