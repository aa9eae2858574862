// SingleTenant mode only: the app registration's client secret, in a vault with RBAC
// authorization. The function app reads it through a Key Vault reference with the
// managed identity (Key Vault Secrets User); the secret never appears in an app setting.

param location string
param tags object = {}
param name string
param secretName string

@secure()
@description('The client secret to store.')
param secretValue string

@description('Principal id of the managed identity that reads the secret.')
param principalId string

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretName
  properties: {
    value: secretValue
    contentType: 'Bot Framework app registration client secret'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = vault.name
// The versionless URI: a Key Vault reference to it follows secret rotation.
output secretUri string = secret.properties.secretUri
