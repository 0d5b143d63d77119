package repo_test

import (
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/repo"
)

var _ node.Store = (*repo.Store)(nil)
