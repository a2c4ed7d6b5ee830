"""eventpipe.cli"""
