"""eventpipe.embedded"""
