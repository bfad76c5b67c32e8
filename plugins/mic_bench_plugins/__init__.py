"""Built-in mic-bench plugins, registered through the ``mic_bench`` entry-point group."""
