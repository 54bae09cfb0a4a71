"""vizpipe inside other training frameworks (optional extras): ``vizpipe.integrations.lightning``."""
