"""eventpipe.dlq"""
