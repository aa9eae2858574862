// The storage account of the Functions host, the app's tables and queues, and the
// Flex Consumption deployment container. Shared keys are disabled: every client
// (host, app, deployment) authenticates with the managed identity.

param location string
param tags object = {}
param name string
param deploymentContainerName string

@description('Principal id of the managed identity that uses the account.')
param principalId string

// botcore.settings.TABLES and QUEUES; the Functions host moves failed queue
// messages to <queue>-poison. tests/unit/test_infra.py keeps these lists equal to the code.
var tableNames = [
  'botconversations'
  'botdeliveries'
  'botreminders'
  'botserviceurls'
  'botpacing'
  'botmembers'
]
var queueNames = [
  'bot-jobs'
  'bot-jobs-poison'
  'bot-sends'
  'bot-sends-poison'
]

var roleIds = [
  'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner: host storage, deployment package
  '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor: queue triggers, the app's queues
  '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor: the app's tables
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in roleIds: {
  name: guid(account.id, principalId, roleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

output name string = account.name
// Built from this cloud's storage suffix (core.windows.net, core.usgovcloudapi.net, ...).
output blobServiceUri string = 'https://${account.name}.blob.${environment().suffixes.storage}'
output tableServiceUri string = 'https://${account.name}.table.${environment().suffixes.storage}'
output queueServiceUri string = 'https://${account.name}.queue.${environment().suffixes.storage}'
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainerName}'
