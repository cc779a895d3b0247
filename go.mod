module github.com/ferrymesh/ferry

go 1.26
