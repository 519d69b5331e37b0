"""Boards: what a CPU artifact needs to run without Python, and running it here.

``runtime`` provides TVM's runtime libraries for the board's architecture, ``runner`` builds
the C++ runner into an artifact and runs it (under qemu-user for another architecture), and
``readme`` writes the page a board bundle carries.
"""
