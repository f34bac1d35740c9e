"""The `chaos` command: the click group (`main.py`) and one module per command group. Modules
here parse words and print results; what they do lives in the layers below."""
