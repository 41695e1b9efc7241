module github.com/messor-sync/messor

go 1.26.8

require github.com/kevinburke/ssh_config v1.6.0
