#!/bin/sh
# Stands in for a compiler: turns the sources into one output file.
echo "$1 from the build stage"
cat main.txt
