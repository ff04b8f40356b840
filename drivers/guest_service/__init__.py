"""cwhost's service inside a guest: background processes that stream, and the guest's files.

It runs in every image cwhost builds (standard library only, copied into the
image as a package) and, in simulated form, beside each fake guest. Each
connection carries one operation in frames (``frames``); every operation runs
in a child process of its own that has become the guest user first.
"""
