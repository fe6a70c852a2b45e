"""The command line: the parser, the commands by concern, the headless reporter and doctor."""
