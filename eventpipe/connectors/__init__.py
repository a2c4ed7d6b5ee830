"""eventpipe.connectors"""
