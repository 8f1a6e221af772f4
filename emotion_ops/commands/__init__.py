"""One module per stage, each command a thin layer over one function of a lower package (the
console calls the same functions): ``training``, ``serving``, ``monitoring``, ``labels``,
``bench``; ``common`` holds the options and error handling they share. Each command imports
its stage when it runs, so ``--help`` and a light command pay nothing for torch or MLflow."""
