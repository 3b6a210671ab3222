module a.meshkit.dev/protoconflict

go 1.24
