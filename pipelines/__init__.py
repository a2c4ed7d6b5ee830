"""eventpipe.pipelines"""
